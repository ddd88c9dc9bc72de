"""``dramatiq-bbo partitions``: each partition of the state tables with its rows per table,
its age and its state (current, older, detachable, held, detached).

A thin shell over :func:`dramatiq_bbo.partitions.listing.list_partitions`, which any other
surface (a web page) calls the same way; ``--json`` prints the same data for scripts.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from dramatiq_bbo.cli.main import EXIT_OK, configure_library, database_option, dsn_option
from dramatiq_bbo.cli.output import console, grid, show
from dramatiq_bbo.operate import render
from dramatiq_bbo.partitions.listing import PartitionInfo, list_partitions

#: the column of each state table, in the order of dramatiq_bbo.partitions.tables.PARENTS
COLUMNS = {
    "background_operation_workers": "OPERATIONS",
    "background_operation_workers_cell_local": "CELL-LOCAL OPS",
    "background_operation_jobs": "JOBS",
    "background_operation_jobs_cell_local": "CELL-LOCAL JOBS",
}


def register(group: click.Group) -> None:
    group.add_command(partitions)


def rows(infos: list[PartitionInfo]) -> tuple[list[str], list[list[str]]]:
    """The table the command prints: one row per partition."""
    headers = ["PARTITION", "STATE", "AGE", "OPENED", "CLOSED", "RETIRE AFTER"]
    headers += [COLUMNS.get(t.table, t.table.upper()) for t in infos[0].tables] if infos else []
    headers.append("UNFINISHED")
    body = [
        [
            str(info.number),
            info.state.value,
            render.duration(info.age.total_seconds()),
            _moment(info.opened_at),
            _moment(info.closed_at),
            _moment(info.retire_after),
            *[render.text(t.rows) for t in info.tables],
            render.text(info.unfinished),
        ]
        for info in infos
    ]
    return headers, body


def as_dicts(infos: list[PartitionInfo]) -> list[dict[str, Any]]:
    """The listing as JSON-ready dicts (times in ISO 8601, the age in seconds)."""
    return [
        {
            "partition": info.number,
            "state": info.state.value,
            "age_seconds": round(info.age.total_seconds()),
            "opened_at": info.opened_at.isoformat(),
            "closed_at": None if info.closed_at is None else info.closed_at.isoformat(),
            "retire_after": None if info.retire_after is None else info.retire_after.isoformat(),
            "tables": {t.table: {"rows": t.rows, "unfinished": t.unfinished} for t in info.tables},
        }
        for info in infos
    ]


def _moment(value: datetime.datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(datetime.UTC):%Y-%m-%d %H:%M}"


@click.command(
    "partitions",
    help="List the partitions of the state tables, oldest first: rows per table, age, "
    "and state (current; older: closed, within retention_days; detachable: past it and "
    "holding nothing unfinished, dropped at the scheduler's next run; held: past it but "
    "holding unfinished work; detached: a retirement under way). Changes nothing.",
    short_help="list the state tables' partitions",
)
@dsn_option
@database_option
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.pass_context
def partitions(ctx: click.Context, as_json: bool) -> int:
    database = configure_library(ctx)
    infos = list_partitions(database)
    if as_json:
        click.echo(json.dumps(as_dicts(infos), indent=2))
        return EXIT_OK
    headers, body = rows(infos)
    show(grid(headers, body, terminal=console().is_terminal))
    return EXIT_OK
