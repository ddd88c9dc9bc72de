"""``run_demo``: the whole demo, from an empty machine to a summary, cleaning up on any exit.

1. a server: an embedded Postgres (default) or ``--dsn``; the bbo schema migrated;
2. ``bbo_demo.todos`` with ``rows`` rows (generate_series), indexed and analysed;
3. dramatiq-bbo configured, a dramatiq-pg broker, ``bbo.setup(broker)``, real dramatiq
   workers (2 threads) in this process, and the scheduler tick driven by a thread;
4. the operation enqueued, then followed until it ends: progress, batch size changes, the
   scripted health hold (:mod:`.hold`);
5. the rows counted again, everything stopped, the summary returned.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import dramatiq_bbo as bbo

from .. import migrations
from ..db import connect
from ..jobs.optimizer import TARGET_EFFICIENCY
from ..logs import install_json_handler
from ..queries import query
from . import hold, runtime, table
from .leftovers import Leftovers
from .operation import DATABASE, PurgeDoneTodos
from .progress import Display, Watch
from .summary import Summary

#: the dramatiq queue of the demo's actors: on a server of your own, your workers (on their
#: own queue) never take the demo's messages, nor the demo's workers yours
QUEUE = "bbo_demo"
WORKER_THREADS = 2

#: The demo's sizes. Sub-batches of 2,000 rows keep the per-transaction overhead small; the
#: first job is small (2,000 rows) so the optimizer visibly grows it towards its target, a
#: job of 0.95 × the interval; a short interval gives it a target within a few seconds and
#: gives the run many jobs to adapt over; no pause between sub-batches (a quiet database).
SIZES: dict[str, Any] = {
    "batch_size": 2_000,
    "sub_batch_size": 2_000,
    "pause_ms": 0,
    "interval_seconds": 0.5,
    "min_batch_size": 2_000,
    "max_batch_size": 1_000_000,
}
#: settings: a short health hold, so the demo shows it expire and the operation resume
SETTINGS: dict[str, Any] = {"health_hold_seconds": 2.0, "queue_name": QUEUE}
#: seconds between two scheduler ticks (periodiq's is a minute; see runtime.scheduler_ticks)
TICK_EVERY = 0.25
#: seconds between two reads of the operation row
POLL_EVERY = 0.2


@dataclass(frozen=True)
class DemoOptions:
    dsn: str | None = None  # None: an embedded Postgres
    rows: int = 1_000_000
    json: bool = False
    timeout: float = 300.0  # seconds the operation may take before the demo gives up
    verbose: bool = False  # dramatiq-bbo's JSON event logs on stderr


def run_demo(options: DemoOptions, stdout: TextIO | None = None) -> Summary:
    """Run the demo; progress goes to ``stdout`` (stderr with ``json``), the summary is
    returned for the caller to print."""
    stream = sys.stderr if options.json else (stdout or sys.stdout)
    display = Display(stream, live=stream.isatty())
    started = time.monotonic()
    cleanup: list[str] = []
    left: list[str] = []
    with (
        runtime.signal_handling() as shield,
        _logs(options.verbose),
        contextlib.ExitStack() as stack,
    ):
        try:
            summary = _run(options, display, stack, cleanup, left)
        except BaseException as exc:
            shield()
            display.close()
            if isinstance(exc, KeyboardInterrupt):
                display.message("interrupted: stopping the workers and the server...")
            raise
        shield()
        display.message("stopping: workers, broker, pools" + _server_words(options) + "...")
    summary.cleanup = cleanup
    summary.left = left
    summary.elapsed_seconds = time.monotonic() - started
    return summary


def _server_words(options: DemoOptions) -> str:
    return ", embedded server" if options.dsn is None else ", demo schema and rows"


def _run(
    options: DemoOptions,
    display: Display,
    stack: contextlib.ExitStack,
    cleanup: list[str],
    left: list[str],
) -> Summary:
    started = time.monotonic()
    server = _start_server(options, display, stack, cleanup)
    if options.dsn is not None:
        # registered first, so it runs last: after the workers, the pools and the table
        stack.callback(_remove_leftovers, Leftovers.before(server.dsn, QUEUE), cleanup, left)
    migrations.migrate(server.dsn)
    now = datetime.datetime.now(datetime.UTC)
    cutoff = now - table.CUTOFF_AGE
    display.message(f"creating {table.TABLE} with {options.rows:,} rows...")
    if options.dsn is not None:
        stack.callback(cleanup.append, f"schema {table.SCHEMA} dropped")
        stack.callback(table.drop, server.dsn)
    table.create(server.dsn, options.rows, now)
    before = table.counts(server.dsn, cutoff)
    setup_seconds = time.monotonic() - started
    display.message(
        f"  {before.rows:,} todos, {before.matching:,} of them done and last updated before "
        f"{cutoff:%Y-%m-%d} ({setup_seconds:.1f} s)"
    )
    scripted, hold_note = _start_pipeline(server.dsn, display, stack, cleanup)

    enqueued_at = time.monotonic()
    operation = bbo.enqueue(
        PurgeDoneTodos,
        table.TABLE,
        "id",
        arguments={"updated_before": cutoff.isoformat()},
        **SIZES,
    ).operation
    stack.callback(_cancel_if_unfinished, operation.id)
    display.message(
        f"enqueued operation {operation.id}: delete the done todos last updated before "
        f"{cutoff:%Y-%m-%d}\n  run by {WORKER_THREADS} dramatiq worker threads in this process"
    )
    display.message(
        f"  the optimizer sizes each job to take {TARGET_EFFICIENCY:.0%} of the "
        f"{operation.interval_seconds:g} s interval\n  between jobs; the first one has "
        f"{operation.batch_size:,} rows"
    )
    watch = Watch(display, scripted if hold_note is None else None)
    final = _follow(operation, watch, enqueued_at + options.timeout)
    operation_seconds = time.monotonic() - enqueued_at
    display.close()
    return _summary(
        server,
        final,
        watch,
        before=before,
        after=table.counts(server.dsn, cutoff),
        operation_seconds=operation_seconds,
        setup_seconds=setup_seconds,
        hold_note=hold_note,
    )


def _start_server(
    options: DemoOptions, display: Display, stack: contextlib.ExitStack, cleanup: list[str]
) -> runtime.Server:
    if options.dsn is not None:
        display.message("using the server given by --dsn")
        return runtime.Server(options.dsn)
    display.message("starting an embedded Postgres...")
    stack.callback(cleanup.append, "embedded server stopped and deleted")
    server = stack.enter_context(runtime.embedded_server())
    display.message(f"  in {server.directory} (deleted at the end)")
    return server


def _start_pipeline(
    dsn: str, display: Display, stack: contextlib.ExitStack, cleanup: list[str]
) -> tuple[hold.ScriptedStop, str | None]:
    """Configure, install the scripted stop, set the pipeline up on a broker, start the
    workers and the ticks. Returns the scripted stop, and why it is not installed (or None).
    """
    bbo.configure(databases={DATABASE: dsn}, **SETTINGS)
    stack.callback(cleanup.append, "dramatiq-bbo pools closed")
    stack.callback(bbo.reset)
    scripted = hold.ScriptedStop()
    hold_note = hold.install(scripted)
    if hold_note is None:
        stack.callback(hold.uninstall, scripted)
    else:
        display.message(f"  note: no health hold in this run: {hold_note}")
    stack.callback(cleanup.append, "broker pool closed")
    broker = stack.enter_context(runtime.broker(dsn))
    bbo.setup(broker, queue_name=QUEUE, outbox_databases={DATABASE})
    _cancel_leftovers(dsn)
    stack.callback(cleanup.append, "workers stopped")
    stack.enter_context(runtime.workers(broker, QUEUE, threads=WORKER_THREADS))
    stack.enter_context(runtime.scheduler_ticks(DATABASE, TICK_EVERY))
    return scripted, hold_note


def _summary(
    server: runtime.Server,
    final: bbo.OperationRecord,
    watch: Watch,
    *,
    before: table.Counts,
    after: table.Counts,
    operation_seconds: float,
    setup_seconds: float,
    hold_note: str | None,
) -> Summary:
    jobs = watch.jobs
    return Summary(
        server="embedded" if server.directory is not None else "dsn",
        data_directory=None if server.directory is None else str(server.directory),
        status=final.status.name.lower() if not final.unfinished else "timeout",
        operation_id=str(final.id),
        rows=before.rows,
        matching=before.matching,
        deleted=before.rows - after.rows,
        kept=after.rows,
        matching_left=after.matching,
        processed=final.processed_tuple_count,
        jobs=len(jobs),
        batch_size_first=jobs[0].batch_size if jobs else final.batch_size,
        batch_size_last=jobs[-1].batch_size if jobs else final.batch_size,
        batch_size_changes=watch.batch_changes,
        operation_seconds=operation_seconds,
        rows_per_second=final.processed_tuple_count / operation_seconds,
        holds=[
            {
                "reason": h.reason,
                "until": h.until.isoformat(),
                "held_seconds": h.held_seconds,
                "ended": h.resumed_at is not None,
            }
            for h in watch.holds
        ],
        hold_note=hold_note,
        setup_seconds=setup_seconds,
        elapsed_seconds=0.0,
    )


def _follow(operation: bbo.OperationRecord, watch: Watch, deadline: float) -> bbo.OperationRecord:
    """Poll the operation until it ends or ``deadline`` (monotonic) passes."""
    while True:
        record = bbo.get_operation(operation.id, database=DATABASE)
        watch.observe(record, bbo.list_jobs(record))
        if not record.unfinished or time.monotonic() > deadline:
            return record
        time.sleep(POLL_EVERY)


def _remove_leftovers(leftovers: Leftovers, cleanup: list[str], left: list[str]) -> None:
    """The demo's rows and messages deleted, the schemas it installed dropped; what stays is
    said in ``left`` (and on the way out of an error, the rest of the cleanup goes on)."""
    try:
        leftovers.remove()
    except Exception as exc:
        logging.getLogger("dramatiq_bbo.demo").exception("removing the demo's rows failed")
        left.append(f"the demo's operation rows and queue messages (removing them failed: {exc})")
        return
    cleanup.append("demo operation rows and queue messages deleted")
    left.extend(leftovers.left)


def _cancel_leftovers(dsn: str) -> None:
    """Cancel demo operations an interrupted demo left unfinished on this server: the
    scheduler ticks of this run would otherwise pick them up."""
    with connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            query("demo_unfinished_operations"),
            {"database_name": DATABASE, "class_name": PurgeDoneTodos.name},
        ).fetchall()
    for (operation_id,) in rows:
        bbo.cancel(operation_id, database=DATABASE)


def _cancel_if_unfinished(operation_id: Any) -> None:
    """On the way out of an interrupted demo: end the operation for good, so nothing is left
    half done on a server of your own (the rest of the cleanup goes on if this fails)."""
    try:
        if bbo.get_operation(operation_id, database=DATABASE).unfinished:
            bbo.cancel(operation_id, database=DATABASE)
    except Exception:
        logging.getLogger("dramatiq_bbo.demo").exception("cancelling %s failed", operation_id)


@contextlib.contextmanager
def _logs(verbose: bool) -> Iterator[None]:
    """dramatiq-bbo's events as JSON lines on stderr: errors only, unless ``verbose``.

    The display already tells what happens; and with no handler at all Python would print
    every warning (a health hold is one) as a bare event name.
    """
    logger = logging.getLogger("dramatiq_bbo")
    level = logger.level
    handler = install_json_handler(logging.INFO if verbose else logging.ERROR)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
