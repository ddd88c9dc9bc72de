"""Scheduler tick: one pass of the scheduler at 1k, 10k and 100k unfinished operations.

The goal: a tick at 100k unfinished operations ≤ 10 ms, whether all are due or almost none
(10), and a growth exponent (slope of log time against log count) ≤ 0.3.

One organization-scoped operation is enqueued, then copied row for row (its job arguments
numbered, so no two are duplicates) up to each count. "All due": never run. "Almost none
due": all but 10 ran just now with a one-day interval. Each tick runs in this process
(``scheduler.tick``, recovery and dispatch, as a worker's pass does, with the default
capacity of 10 jobs): it leases up to 10 operations and writes their orchestrator messages;
no worker consumes them, and between two timed ticks the leases and messages are cleared
(untimed). The median of the timed ticks is reported, after one untimed warm-up tick.
"""

from __future__ import annotations

import statistics
import time

import psycopg

import dramatiq_bbo as bbo
from benchmarks.common import Context, Row, bench_database, execute, growth_exponent, progress
from benchmarks.operations import TouchAndNotify
from dramatiq_bbo.pipeline import scheduler

SECTION = "scheduler"
OPERATIONS = "bbo.background_operation_workers"
COUNTS = (1_000, 10_000, 100_000)
DUE_WHEN_ALMOST_NONE = 10


def grow(dsn: str, count: int) -> None:
    """Copy the one enqueued operation until the table holds ``count`` unfinished ones."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        columns = [
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'bbo'"
                " AND table_name = 'background_operation_workers' AND is_generated = 'NEVER'"
                " AND column_name NOT IN ('id', 'job_arguments') ORDER BY ordinal_position"
            ).fetchall()
        ]
        listed = ", ".join(columns)
        have = conn.execute(f"SELECT count(*) FROM {OPERATIONS}").fetchone()[0]  # type: ignore[index]
        conn.execute(
            f"INSERT INTO {OPERATIONS} ({listed}, job_arguments)"
            f" SELECT {listed}, jsonb_build_object('n', g)"
            f" FROM (SELECT * FROM {OPERATIONS} LIMIT 1) t, generate_series(%s::int, %s::int) g",
            [have, count - 1],
        )


def make_due(dsn: str, all_due: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if all_due:
            conn.execute(f"UPDATE {OPERATIONS} SET last_run_at = NULL, interval_seconds = 0")
        else:
            conn.execute(f"UPDATE {OPERATIONS} SET last_run_at = now(), interval_seconds = 86400")
            conn.execute(
                f"UPDATE {OPERATIONS} SET last_run_at = NULL WHERE id IN"
                f" (SELECT id FROM {OPERATIONS} ORDER BY random() LIMIT %s)",
                [DUE_WHEN_ALMOST_NONE],
            )
        conn.execute(f"VACUUM ANALYZE {OPERATIONS}")


def clear(dsn: str) -> None:
    """Undo a tick's hand-offs: no lease, no message (not timed)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {OPERATIONS} SET lease_owner = NULL, lease_expires_at = NULL"
            " WHERE lease_owner IS NOT NULL"
        )
        conn.execute("DELETE FROM dramatiq.queue")


def timed_ticks(dsn: str, repeat: int) -> float:
    """Median seconds of ``repeat`` ticks (after one warm-up)."""
    seconds = []
    for index in range(repeat + 1):
        started = time.perf_counter()
        report = scheduler.tick("main")
        elapsed = time.perf_counter() - started
        assert report.dispatched, "the tick dispatched nothing"
        clear(dsn)
        if index:
            seconds.append(elapsed)
    return statistics.median(seconds)


def section(ctx: Context) -> list[Row]:
    repeat = ctx.pick(5, 15)
    ticks: dict[bool, list[float]] = {True: [], False: []}
    with bench_database(ctx, "bbo_bench_sched") as dsn:
        execute(dsn, "CREATE TABLE sched_rows (id bigint PRIMARY KEY, visits int DEFAULT 0)")
        bbo.enqueue(
            TouchAndNotify, "sched_rows", "id", organization_id=1, user_id=1,
            arguments={"n": -1}, connection=None,
        )  # fmt: skip
        clear(dsn)  # the enqueue's own wake-up
        # its range is empty, so the enqueue (one hop: it starts the operation itself) finished
        # it at once; the copies must be unfinished, as the operation was when enqueued
        execute(dsn, f"UPDATE {OPERATIONS} SET status = 0, started_at = NULL, finished_at = NULL")
        for count in COUNTS:
            grow(dsn, count)
            for all_due in (True, False):
                make_due(dsn, all_due)
                ticks[all_due].append(timed_ticks(dsn, repeat))
            progress(f"  scheduler: {count:,} operations")
    rows = []
    for all_due, label in ((True, "all due"), (False, f"{DUE_WHEN_ALMOST_NONE} due")):
        first = ticks[all_due][0] * 1000
        for count, seconds in zip(COUNTS, ticks[all_due], strict=True):
            ms = seconds * 1000
            row = Row(SECTION, f"tick at {count:,} unfinished operations, {label}", ms, "ms")
            if count != COUNTS[0]:
                row.baseline, row.baseline_name, row.ratio = (
                    round(first, 2),
                    "tick at 1,000",
                    ms / first,
                )
            if count == COUNTS[-1]:
                row.goal = "≤ 10 ms"
            rows.append(row)
        rows.append(
            Row(SECTION, f"growth exponent 1k → 100k, {label}",
                growth_exponent(COUNTS, ticks[all_due]), "", goal="≤ 0.3")
        )  # fmt: skip
    return rows
