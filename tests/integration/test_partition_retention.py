"""Acceptance: sixty simulated days of operations under sliding partitions.

Each simulated day: the clock moves a day, a scheduler pass runs (and with it the partition
manager), a few thousand operations in all are created over the run — one a day through
``enqueue`` and run to its end for real, the rest copied in bulk from it (the rows short
finished operations leave, and paused ones holding a resume cursor and a job checkpoint) —
and three long operations each walk a little further with ``run_to_completion`` stopped by a
stop check, so they run across every rotation. Once, a rotation is forced from inside a
running job's stop check.

What must hold: the partitions and the finished rows stay bounded by the retention window;
no unfinished operation, resume cursor or job checkpoint is lost; the long operations visit
every row exactly once, the one that was running during the forced rotation included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import clock
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.partitions import manager
from dramatiq_bbo.partitions.ddl import open_partition
from dramatiq_bbo.partitions.tables import current_partition
from dramatiq_bbo.pipeline import scheduler
from tests.integration.enqueue_support import define_operation, make_todos
from tests.integration.partition_support import (
    copy_operations,
    count_rows,
    leftover_tables,
    live_partitions,
    partition_of,
)

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

DAYS = 60
#: finished copies per scope and day: 50 finished operations a day, 3000 in all
FINISHED_PER_DAY = 25
#: one day in so many, each scope's copies come from an operation enqueued and run that day
SAMPLE_EVERY = 3
#: paused copies per scope and day: unfinished for good, moved at every rotation
PAUSED_PER_DAY = 1
LONG_OPERATIONS = 2
LONG_ROWS = 600
SIZES: dict[str, Any] = {
    "batch_size": 20,
    "sub_batch_size": 5,
    "min_batch_size": 20,
    "max_batch_size": 20,
}
#: the day a rotation is forced from inside a running job's stop check
FORCED_DAY = 24
DURATION_DAYS = 7
RETENTION_DAYS = 14

WORKERS = "bbo.background_operation_workers"
WORKERS_CELL_LOCAL = "bbo.background_operation_workers_cell_local"
JOBS = "bbo.background_operation_jobs"
JOBS_CELL_LOCAL = "bbo.background_operation_jobs_cell_local"


def visit(self: Any) -> None:
    for sub_batch in self.each_sub_batch():
        sub_batch.update(visits=self.table.visits + 1)


@pytest.fixture
def world(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],  # noqa: F811
) -> Iterator[dict[str, Any]]:
    bbo.configure(
        dsn=configured,
        scheduler_lock_timeout_seconds=0.3,
        partition_duration_days=DURATION_DAYS,
        retention_days=RETENTION_DAYS,
    )
    make_todos(conn, 50)
    short = define_operation(pause_ms=0, interval_seconds=0)
    long = define_operation(perform=visit, pause_ms=0, interval_seconds=0)
    with clock.simulated() as simulated:
        longs = []
        for n in range(LONG_OPERATIONS):
            table = f"long_{n}"
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, visits int DEFAULT 0)")
            conn.execute(f"INSERT INTO {table} (id) SELECT generate_series(1, {LONG_ROWS})")
            options: dict[str, Any] = {"organization_id": 5, "user_id": 1} if n == 0 else {}
            longs.append(bbo.enqueue(long, table, "id", **SIZES, **options).operation)
        yield {"clock": simulated, "short": short, "longs": longs}


def one_day_of_short_operations(
    conn: psycopg.Connection[Any], short: Any, day: int, templates: dict[str, Any]
) -> dict[str, list[Any]]:
    """In each scope: every third day an operation enqueued and run to its end for real (the
    template of the copies), then copies of the latest one in bulk: finished copies, and paused
    ones (returned per table: they must survive to the end)."""
    paused: dict[str, list[Any]] = {}
    for table in (WORKERS, WORKERS_CELL_LOCAL):
        organization = table == WORKERS
        if day % SAMPLE_EVERY == 1:
            options: dict[str, Any] = {"organization_id": 9, "user_id": 2} if organization else {}
            record = bbo.enqueue(short, "todos", "id", arguments={"day": day}, **options).operation
            assert bbo.run_to_completion(record.id).status == bbo.OperationStatus.FINISHED
            templates[table] = record.id
        tag = f"{day}{table}"
        copy_operations(
            conn, templates[table], FINISHED_PER_DAY, organization=organization, status=3, tag=tag
        )
        paused[table] = copy_operations(
            conn,
            templates[table],
            PAUSED_PER_DAY,
            organization=organization,
            status=2,
            tag=f"p{tag}",
        )
    return paused


def forced_rotation_check(operation: Any, seen: dict[str, Any]) -> Callable[[], str | None]:
    """A stop check that, at its first call (the job is running: it holds the operation's
    stage lease and its own), opens the next partition and runs the manager, then lets the
    job go on for one more sub-batch."""
    calls = 0

    def check() -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            with REGISTRY.connection() as lent:
                before = current_partition(lent)
                open_partition(lent, before + 1, 0.3)
                seen["report"] = manager.manage()
                seen["partition_during_run"] = partition_of(lent, table_of(operation), operation.id)
                seen["current"] = current_partition(lent)
        return "enough for today" if calls > 1 else None

    return check


def one_sub_batch_a_day() -> str | None:
    """A stop check asked after each sub-batch: one a day."""
    return "enough for today"


def finished_operations(conn: psycopg.Connection[Any]) -> int:
    return count_rows(conn, WORKERS, "status = 3") + count_rows(
        conn, WORKERS_CELL_LOCAL, "status = 3"
    )


def table_of(operation: Any) -> str:
    return WORKERS if operation.organization_id is not None else WORKERS_CELL_LOCAL


def test_sixty_days_keep_partitions_and_history_bounded_and_lose_no_work(
    world: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    simulated, longs = world["clock"], world["longs"]
    paused: dict[str, list[Any]] = {WORKERS: [], WORKERS_CELL_LOCAL: []}
    templates: dict[str, Any] = {}
    dropped: set[int] = set()
    seen: dict[str, Any] = {}
    finished_per_day = 2 * FINISHED_PER_DAY + 2
    finished_bound = finished_per_day * (DURATION_DAYS + 1 + RETENTION_DAYS + 1)
    # current + the ones closed within the retention (each open >= DURATION_DAYS) + the
    # forced one, which lived a short while
    partitions_bound = 1 + math.ceil((RETENTION_DAYS + 1) / DURATION_DAYS) + 1
    for day in range(1, DAYS + 1):
        simulated.advance(days=1)
        report = scheduler.tick("main").partitions
        assert report is not None and report.ran and report.failures == [], report
        dropped.update(report.dropped)
        for table, ids in one_day_of_short_operations(conn, world["short"], day, templates).items():
            paused[table] += ids
        for operation in longs:
            forced = day == FORCED_DAY and operation is longs[0]
            check = forced_rotation_check(operation, seen) if forced else one_sub_batch_a_day
            before = bbo.get_operation(operation.id)
            record = bbo.run_to_completion(operation.id, stop_check=check)
            assert record.status == bbo.OperationStatus.ACTIVE, (day, record)
            if forced:
                seen["before"], seen["after"] = before, record
        assert len(live_partitions(conn)) <= partitions_bound, day
        assert finished_operations(conn) <= finished_bound, day

    # The rotation forced during a running job did not move it, nor stop it early: the job
    # went on for its second sub-batch, checkpointed where it was.
    assert seen["current"] == seen["report"].current and seen["report"].failures == []
    assert seen["partition_during_run"] == seen["before"].partition < seen["current"]
    progress = seen["after"].processed_tuple_count - seen["before"].processed_tuple_count
    assert progress >= 2 * SIZES["sub_batch_size"]
    # Partitions came and went; the old history with them.
    assert len(dropped) >= 4 and min(live_partitions(conn)) > max(dropped)
    assert leftover_tables(conn) == []
    assert finished_operations(conn) < DAYS * finished_per_day / 2
    # Every paused operation is still there, cursor and job checkpoint intact.
    for table, jobs in ((WORKERS, JOBS), (WORKERS_CELL_LOCAL, JOBS_CELL_LOCAL)):
        rows = conn.execute(
            f"SELECT o.id, o.status, o.next_cursor, j.checkpoint_cursor, j.partition, o.partition"
            f" FROM {table} o JOIN {jobs} j ON j.worker_id = o.id"
            f" WHERE o.id = ANY(%s)",
            [paused[table]],
        ).fetchall()
        assert len(rows) == DAYS * PAUSED_PER_DAY
        for _id, status, cursor, checkpoint, job_partition, partition in rows:
            assert status == 2 and checkpoint == cursor + [1] and job_partition == partition
    # The long operations finish, every row visited exactly once.
    for operation in longs:
        assert bbo.run_to_completion(operation.id).status == bbo.OperationStatus.FINISHED
        table = bbo.get_operation(operation.id).table_name
        visits = conn.execute(f"SELECT visits, count(*) FROM {table} GROUP BY 1").fetchall()
        assert visits == [(1, LONG_ROWS)], (table, visits)
