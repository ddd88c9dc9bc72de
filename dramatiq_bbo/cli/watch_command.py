"""``dramatiq-bbo watch``: live progress bars of the running operations, until Ctrl-C.

Every ``--every`` seconds it runs the command layer's ``list`` for the active, queued and
paused operations (the ``bbo.operations`` view: progress, rows/s and ETA computed there) and
redraws one line per operation: a bar, the percentage, the rate, the ETA, and why it waits
when it waits. Ctrl-C is how it ends: exit 0. On a pipe (not a terminal) it prints one frame
per refresh instead of redrawing.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from dramatiq_bbo.cli.main import EXIT_OK, configure_library, database_option, dsn_option, operator
from dramatiq_bbo.cli.operate_commands import ParsedValue
from dramatiq_bbo.cli.output import console, grid, show
from dramatiq_bbo.operate import render
from dramatiq_bbo.operate.commands import COMMANDS, Context

#: what ``watch`` shows, in this order
STATUSES = ("active", "queued", "paused")
#: most operations drawn per status
LIMIT = 50
_LIST = COMMANDS["list"]
_CLASS = next(p for p in _LIST.parameters if p.flag == "--class")


def register(group: click.Group) -> None:
    group.add_command(watch)


class _Seconds(click.ParamType):
    name = "SECONDS"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0.1 <= seconds <= 3_600:
            raise click.UsageError(f"--every must be 0.1..3600 seconds, got {value!r}", ctx)
        return seconds


def operations(context: Context, class_name: str | None) -> list[dict[str, Any]]:
    """The unfinished operations, active first, through the command layer's ``list``."""
    filters = {} if class_name is None else {"class_name": class_name}
    found: list[dict[str, Any]] = []
    for status in STATUSES:
        listing = _LIST.run(context, status=status, limit=LIMIT, **filters)
        found.extend(listing.items)  # type: ignore[union-attr]
    return found


def frame(items: list[dict[str, Any]], every: float, *, terminal: bool = True) -> Group:
    """One picture: a title line, then one row per operation with its bar."""
    now = datetime.datetime.now().strftime("%H:%M:%S")
    title = Text(
        f"dramatiq-bbo watch: {len(items)} unfinished operation"
        f"{'' if len(items) == 1 else 's'} at {now} (every {every:g} s; Ctrl-C to stop)",
        style="bold",
    )
    if not items:
        return Group(title, Text("no active, queued or paused operations"))
    headers = ["ID", "CLASS", "TABLE", "PROGRESS", "", "ROWS/S", "ETA", "STATUS"]
    table = grid(headers, [], terminal=terminal)
    for item in items:
        percent = item.get("progress_percent")
        bar = ProgressBar(total=100.0 if percent is not None else None, width=30)
        bar.completed = min(float(percent), 100.0) if percent is not None else 0.0
        table.add_row(
            render.text(item.get("id")),
            render.text(item.get("job_class_name")),
            f"{item.get('table_name')}.{item.get('column_name')}",
            bar,
            render.percent(percent),
            render.text(item.get("rows_per_second")),
            render.duration(item.get("eta")),
            render.status(item),
        )
    return Group(title, table)


def _ticks(every: float) -> Iterator[None]:
    while True:
        yield
        time.sleep(every)


@click.command(
    "watch",
    help="Live progress bars of the active, queued and paused operations, with rate and "
    "ETA, refreshed until Ctrl-C.",
    short_help="live progress bars until Ctrl-C",
)
@dsn_option
@database_option
@click.option("--every", type=_Seconds(), default=2.0, metavar="SECONDS", help="refresh period")
@click.option("--class", "class_name", type=ParsedValue(_CLASS), help="only this class")
@click.pass_context
def watch(ctx: click.Context, every: float, class_name: str | None) -> int:
    database = configure_library(ctx)
    context = Context(by=operator(), database=database)
    out = console()
    try:
        if not out.is_terminal:
            for _ in _ticks(every):
                show(frame(operations(context, class_name), every, terminal=False))
        with Live(console=out, auto_refresh=False, transient=False) as live:
            for _ in _ticks(every):
                live.update(frame(operations(context, class_name), every), refresh=True)
    except KeyboardInterrupt:
        pass
    return EXIT_OK
