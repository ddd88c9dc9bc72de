"""``dramatiq-bbo finalize ID``: run the rest of an operation now, with a progress bar.

The command layer's ``finalize`` (run to its end in this process, as ``run_to_completion``)
with a rich progress bar on stderr fed by its ``on_progress`` calls, so ``--json`` on stdout
stays parseable. Exit 0 when the operation finished, 1 when it stopped before its end (paused,
cancelled or its class disabled meanwhile), 130 on Ctrl-C (the job is given back at its last
checkpoint; the pipeline carries the operation on).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dramatiq_bbo.cli.main import (
    EXIT_ERROR,
    EXIT_OK,
    configure_library,
    database_option,
    dsn_option,
    operator,
)
from dramatiq_bbo.cli.operate_commands import ParsedValue
from dramatiq_bbo.cli.output import console, emit
from dramatiq_bbo.operate.commands import Context
from dramatiq_bbo.operate.results import Done
from dramatiq_bbo.operate.running import FINALIZE
from dramatiq_bbo.operate.summaries import get_summary

_COMMAND = FINALIZE


def register(group: click.Group) -> None:
    group.add_command(finalize)


class Bar:
    """The progress bar ``on_progress`` feeds: rows walked of the estimated total. Drawn from
    the first report on, so a refused finalize prints its error alone."""

    def __init__(self, progress: Progress, operation_id: Any) -> None:
        self.progress = progress
        self.operation_id = operation_id
        self.task: TaskID | None = None

    def __call__(self, record: Any) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(f"operation {self.operation_id}", total=None)
        done = int(record.processed_tuple_count or 0)
        total = record.total_tuple_count
        # the estimate may lag the walk: never draw more than 100%
        total = max(int(total), done) if total else None
        self.progress.update(self.task, completed=done, total=total)


def import_modules(ctx: click.Context, modules: tuple[str, ...]) -> None:
    """Import the application's modules that register operation classes (a usage error
    naming the module when one cannot be imported). The current directory is searched
    first, as ``python -m`` and the dramatiq command do."""
    if modules and "" not in sys.path:
        sys.path.insert(0, "")
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or the module failed while importing
            raise click.UsageError(
                f"--import: cannot import {name!r}: {type(exc).__name__}: {exc}", ctx
            ) from None


@click.command(
    "finalize",
    help="Run the rest of an operation now, in this process, as run_to_completion does "
    "(same jobs, checkpoints and retries; no interval between jobs), with a progress bar. "
    "Safe while workers run it: a job a worker holds is waited for, never run twice. The "
    "operation's class must be importable here: name the module defining it with --import "
    "(as you name it to the dramatiq command).",
    short_help=_COMMAND.help,
)
@click.argument("operation_id", type=ParsedValue(_COMMAND.parameters[0]), metavar="ID")
@dsn_option
@database_option
@click.option(
    "--import",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="import this module first: the one defining the operation's class (repeatable)",
)
@click.option("--json", "as_json", is_flag=True, help="print the operation as JSON at the end")
@click.pass_context
def finalize(ctx: click.Context, operation_id: Any, modules: tuple[str, ...], as_json: bool) -> int:
    import_modules(ctx, modules)
    database = configure_library(ctx)
    # The runner looks the operation's own database name up (the name it was enqueued
    # under in the application): this command's database answers to it too.
    enqueued_under = get_summary(operation_id, database=database).database_name
    if enqueued_under != database:
        configure_library(ctx, enqueued_under)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    progress = Progress(*columns, console=console(stderr=True), transient=False)
    bar = Bar(progress, operation_id)
    try:
        result = _COMMAND.run(
            Context(by=operator(), database=database, on_progress=bar), operation_id=operation_id
        )
    finally:
        if bar.task is not None:
            progress.stop()
    emit(result, "json" if as_json else "table")
    assert isinstance(result, Done)
    finished = result.operation is not None and result.operation.get("status") == "finished"
    return EXIT_OK if finished else EXIT_ERROR
