"""The ``dramatiq-bbo`` command: the click group, the shared options, exit codes and errors.

Each subcommand lives in a module of its own (:data:`COMMAND_MODULES`) exposing
``register(group)``. This module owns what every subcommand shares: ``--dsn`` (or
``BBO_DSN``) and ``--database``, accepted before or after the subcommand's name; who is
running the command (the ``by`` of each change it makes); and turning the library's typed
errors into one line on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

import getpass
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import psycopg

from dramatiq_bbo.errors import BBOError, InvalidCommand, SchemaTooNew

PROG = "dramatiq-bbo"

#: modules holding subcommands; each exposes ``register(group)``
COMMAND_MODULES: tuple[str, ...] = (
    "dramatiq_bbo.cli.operate_commands",
    "dramatiq_bbo.cli.finalize_command",
    "dramatiq_bbo.cli.watch_command",
    "dramatiq_bbo.cli.migrate_command",
    "dramatiq_bbo.cli.partitions_command",
    "dramatiq_bbo.cli.demo_command",
    "dramatiq_bbo.cli.move_command",
    "dramatiq_bbo.cli.web_command",
    "dramatiq_bbo.tracking.cli",
    "dramatiq_bbo.cli.read_only_command",
)

#: environment variable read when a subcommand that needs a database gets no ``--dsn``
DSN_ENV = "BBO_DSN"
#: the name the database is registered under without ``--database``
DEFAULT_DATABASE = "main"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SCHEMA_TOO_NEW = 3
EXIT_INTERRUPTED = 130

#: errors with an exit code of their own; any other BBOError exits with EXIT_ERROR
_EXIT_CODES: dict[type[BaseException], int] = {
    SchemaTooNew: EXIT_SCHEMA_TOO_NEW,
    InvalidCommand: EXIT_USAGE,
}

# "\b" keeps click from re-flowing the paragraph that follows it.
_EPILOG = f"""\b
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    error or refused (unknown operation, wrong state, database unreachable...)
  {EXIT_USAGE}    usage error (unknown option, malformed value, no database given)
  {EXIT_SCHEMA_TOO_NEW}    the database schema is newer than this dramatiq-bbo: upgrade it
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

The database is taken from --dsn, else from the {DSN_ENV} environment variable; both --dsn
and --database may come before or after the command's name.
"""


@dataclass
class Target:
    """The database the command line was given (``ctx.obj``, shared by group and command)."""

    dsn: str | None = None
    database: str | None = None


F = TypeVar("F", bound=Callable[..., Any])


def _remember(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            setattr(ctx.ensure_object(Target), attribute, value)

    return callback


def dsn_option(function: F) -> F:
    """``--dsn``, stored on the shared :class:`Target` (so it may come before the command)."""
    return click.option(
        "--dsn",
        metavar="DSN",
        expose_value=False,
        callback=_remember("dsn"),
        help=f"libpq connection string or URI (default: ${DSN_ENV})",
    )(function)


def database_option(function: F) -> F:
    """``--database NAME``: the name the DSN is registered under (default ``main``)."""
    return click.option(
        "--database",
        metavar="NAME",
        expose_value=False,
        callback=_remember("database"),
        help=f"the database's name in configure(databases=...) (default: {DEFAULT_DATABASE})",
    )(function)


def target(ctx: click.Context) -> Target:
    return ctx.ensure_object(Target)


def require_dsn(ctx: click.Context) -> str:
    """The DSN given by ``--dsn`` or ``BBO_DSN``; a usage error without one."""
    dsn = target(ctx).dsn or os.environ.get(DSN_ENV) or None
    if dsn is None:
        raise click.UsageError(f"no database given: pass --dsn or set {DSN_ENV}", ctx)
    return dsn


def configure_library(ctx: click.Context, *also: str) -> str:
    """Configure dramatiq-bbo on the given database; returns the name it is registered as.
    ``also``: more names for the same database (the name an operation was enqueued under,
    which the code running it looks up)."""
    import dramatiq_bbo as bbo

    dsn = require_dsn(ctx)
    name = target(ctx).database or DEFAULT_DATABASE
    bbo.configure(databases={**{other: dsn for other in also}, name: dsn})
    ctx.call_on_close(bbo.reset)
    return name


def operator() -> str:
    """Who runs this command, for the log event of each change: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


@click.group(
    name=PROG,
    epilog=_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@dsn_option
@database_option
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="log dramatiq-bbo's events (who changed what) to stderr as JSON lines",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Batched background operations on PostgreSQL: see and steer them."""
    ctx.call_on_close(_log_events(verbose))


def _log_events(verbose: bool) -> Callable[[], None]:
    """dramatiq-bbo's events on stderr as JSON lines: errors only unless ``verbose`` (the
    command prints what it did; and with no handler at all Python would print every warning
    as a bare event name). Returns what undoes it."""
    from dramatiq_bbo.logs import JsonFormatter, logger

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO if verbose else logging.ERROR)
    level = logger.level
    if verbose and not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    # The pool's own warnings (one per failed connect attempt) repeat what the error line
    # says: to the verbose handler, or nowhere.
    pool = logging.getLogger("psycopg.pool")
    quiet = handler if verbose else logging.NullHandler()
    pool.addHandler(quiet)
    propagate, pool.propagate = pool.propagate, False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)
        pool.removeHandler(quiet)
        pool.propagate = propagate

    return undo


def build() -> click.Group:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(cli)
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the ``--help`` epilog)."""
    group = build()
    try:
        code = group.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name=PROG,
            standalone_mode=False,
            obj=Target(),
        )
        return int(code or EXIT_OK)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        print(f"{PROG}: error: {exc.format_message()}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except click.ClickException as exc:
        print(f"{PROG}: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except BBOError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return _exit_code(exc)
    except psycopg.Error as exc:
        # A database error the library did not wrap (connection lost mid-command...).
        print(f"{PROG}: error: database error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR


def _exit_code(exc: BaseException) -> int:
    for klass in type(exc).__mro__:
        if klass in _EXIT_CODES:
            return _EXIT_CODES[klass]
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
