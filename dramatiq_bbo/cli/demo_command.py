"""``dramatiq-bbo demo``: see the library work on a million rows, with nothing to set up.

A thin shell over :mod:`dramatiq_bbo.demo`. Unlike the other subcommands it needs no
database: without ``--dsn`` it starts an embedded Postgres, and it ignores ``BBO_DSN`` (a
demo should not write to the database your environment points at unless you name it).
"""

from __future__ import annotations

import argparse
import math
import sys

from dramatiq_bbo.cli.main import EXIT_ERROR, EXIT_OK

_DESCRIPTION = """\
Start an embedded Postgres (or use --dsn), create a table of todos, enqueue an operation that
deletes the done ones last updated over a year ago, and run it on real dramatiq workers in
this process: live progress, the batch optimizer adapting the batch size, a health hold that
expires by itself, then a summary. Everything it started is stopped (and the embedded server
deleted) at the end, on an error, or on Ctrl-C.
"""

_DSN_HELP = """\
run on this server instead (libpq string or URI): the demo table goes into a schema of its
own, bbo_demo, dropped at the end; the bbo schema is migrated if needed. BBO_DSN is not read.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a live demo on an embedded Postgres (no setup)",
        description=_DESCRIPTION,
    )
    # Not ``add_dsn_option``: its ``dsn`` attribute makes ``main`` insist on a database.
    parser.add_argument("--dsn", dest="server_dsn", metavar="DSN", default=None, help=_DSN_HELP)
    parser.add_argument(
        "--rows",
        type=_positive_int,
        default=1_000_000,
        metavar="N",
        help="rows in the demo table (default: 1,000,000)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON (progress goes to stderr)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=300.0,
        metavar="SECONDS",
        help="give up when the operation has not finished after this long (default: 300)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also log dramatiq-bbo's JSON events to stderr"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dramatiq_bbo.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        dsn=args.server_dsn,
        rows=args.rows,
        json=args.json,
        timeout=args.timeout,
        verbose=args.verbose,
    )
    summary = run_demo(options)
    if args.json:
        print(summary.as_json())
    else:
        print(summary.as_table())
    if not summary.ok:
        print(
            f"dramatiq-bbo: error: the demo did not end as expected (status {summary.status}, "
            f"{summary.matching_left:,} matching rows left)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


#: most rows the demo table may hold (a sanity bound, not a limit of the library)
MAX_DEMO_ROWS = 100_000_000


def _positive_int(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if not 1 <= value <= MAX_DEMO_ROWS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_DEMO_ROWS:,}, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, 86400], got {text}")
    return value
