"""``dramatiq-bbo demo``: see the library work on a million rows, with nothing to set up.

A thin shell over :mod:`dramatiq_bbo.demo`. Unlike the other subcommands it needs no
database: without ``--dsn`` it starts an embedded Postgres, and it ignores ``BBO_DSN`` (a
demo should not write to the database your environment points at unless you name it).
"""

from __future__ import annotations

import math
import sys

import click

from dramatiq_bbo.cli.main import EXIT_ERROR, EXIT_OK, target

_DESCRIPTION = """\
Start an embedded Postgres (or use --dsn), create a table of todos, enqueue an operation that
deletes the done ones last updated over a year ago, and run it on real dramatiq workers in
this process: live progress, the batch optimizer adapting the batch size, a health hold that
expires by itself, then a summary. Everything it started is stopped (and the embedded server
deleted) at the end, on an error, or on Ctrl-C.
"""

_DSN_HELP = """\
run on this server instead (libpq string or URI). The demo removes what it created there:
its schema bbo_demo, its operation and job rows and its queue messages; the bbo and dramatiq
schemas too when the demo installed them. BBO_DSN is not read.
"""

#: most rows the demo table may hold (a sanity bound, not a limit of the library)
MAX_DEMO_ROWS = 100_000_000


class _Rows(click.ParamType):
    name = "N"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value)
        try:
            rows = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            self.fail(f"must be a whole number 1..{MAX_DEMO_ROWS:,}, got {text}", param, ctx)
        if not 1 <= rows <= MAX_DEMO_ROWS:
            self.fail(f"must be 1..{MAX_DEMO_ROWS:,}, got {text}", param, ctx)
        return rows


class _Seconds(click.ParamType):
    name = "SECONDS"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = float(str(value))
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or not 0 < seconds <= 86_400:
            self.fail(f"must be a number of seconds in (0, 86400], got {value}", param, ctx)
        return seconds


def register(group: click.Group) -> None:
    group.add_command(demo)


@click.command(help=_DESCRIPTION, short_help="run a live demo on an embedded Postgres (no setup)")
# Not ``dsn_option``: that one falls back to BBO_DSN.
@click.option("--dsn", "server_dsn", metavar="DSN", default=None, help=_DSN_HELP)
@click.option(
    "--rows",
    type=_Rows(),
    default=1_000_000,
    metavar="N",
    help="rows in the demo table (default: 1,000,000)",
)
@click.option(
    "--json", "as_json", is_flag=True, help="print the summary as JSON (progress to stderr)"
)
@click.option(
    "--timeout",
    type=_Seconds(),
    default=300.0,
    metavar="SECONDS",
    help="give up when the operation has not finished after this long (default: 300)",
)
@click.option("--verbose", is_flag=True, help="also log dramatiq-bbo's JSON events to stderr")
@click.pass_context
def demo(
    ctx: click.Context,
    server_dsn: str | None,
    rows: int,
    as_json: bool,
    timeout: float,
    verbose: bool,
) -> int:
    from dramatiq_bbo.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        dsn=server_dsn or target(ctx).dsn,
        rows=rows,
        json=as_json,
        timeout=timeout,
        verbose=verbose,
    )
    summary = run_demo(options)
    print(summary.as_json() if as_json else summary.as_table())
    if not summary.ok:
        print(
            f"dramatiq-bbo: error: the demo did not end as expected (status {summary.status}, "
            f"{summary.matching_left:,} matching rows left)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK
