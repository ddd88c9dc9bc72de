"""The ``dramatiq-bbo`` command: argument parsing, exit codes, and error reporting.

Each subcommand lives in its own module listed in :data:`COMMAND_MODULES`; the module exposes
``register(subparsers)``, which adds its parser and sets ``handler`` (``Namespace -> int``)
as a default. This module owns what every subcommand shares: the ``--dsn`` option and its
``BBO_DSN`` fallback, and turning the library's typed errors into one line on stderr and an
exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import psycopg

from dramatiq_bbo.errors import BBOError, SchemaTooNew

PROG = "dramatiq-bbo"

#: modules holding one subcommand each; add a module here to add a subcommand
COMMAND_MODULES: tuple[str, ...] = (
    "dramatiq_bbo.cli.migrate_command",
    "dramatiq_bbo.cli.demo_command",
)

#: environment variable read when a subcommand that needs a database gets no ``--dsn``
DSN_ENV = "BBO_DSN"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SCHEMA_TOO_NEW = 3
EXIT_INTERRUPTED = 130

#: errors with an exit code of their own; any other BBOError exits with EXIT_ERROR
_EXIT_CODES: dict[type[BaseException], int] = {SchemaTooNew: EXIT_SCHEMA_TOO_NEW}

_EPILOG = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    error (bad DSN, database unreachable, a migration failed...)
  {EXIT_USAGE}    usage error (unknown option, no database given)
  {EXIT_SCHEMA_TOO_NEW}    the database schema is newer than this dramatiq-bbo: upgrade it
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

The database is taken from --dsn, else from the {DSN_ENV} environment variable.
"""


def add_dsn_option(parser: argparse.ArgumentParser) -> None:
    """Give a subcommand the shared ``--dsn`` option; ``main`` fills it from ``BBO_DSN``."""
    parser.add_argument(
        "--dsn",
        metavar="DSN",
        default=None,
        help=f"libpq connection string or URI (default: ${DSN_ENV})",
    )


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Batched background operations on PostgreSQL.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser, subparsers


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the ``--help`` epilog)."""
    parser, subparsers = build_parser()
    try:
        args = parser.parse_args(argv)
        if hasattr(args, "dsn") and not args.dsn:
            args.dsn = os.environ.get(DSN_ENV) or None
            if args.dsn is None:
                subparsers.choices[args.command].error(
                    f"no database given: pass --dsn or set {DSN_ENV}"
                )
        return int(args.handler(args))
    except SystemExit as exc:  # argparse after --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BBOError as exc:
        print(f"{PROG}: error: {str(exc).strip()}", file=sys.stderr)
        return _exit_code(exc)
    except psycopg.Error as exc:
        # A database error the library did not wrap (connection lost mid-command...).
        print(f"{PROG}: error: database error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR


def _exit_code(exc: BaseException) -> int:
    for klass in type(exc).__mro__:
        if klass in _EXIT_CODES:
            return _EXIT_CODES[klass]
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
