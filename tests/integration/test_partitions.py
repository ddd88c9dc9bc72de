"""The partition manager's decisions, one at a time, on the simulated clock: when the next
partition opens, which operations move, which partitions are dropped or kept, what a failed
or contended run does, that enqueue still finds a duplicate in an older partition, and the
``dramatiq-bbo partitions`` listing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import clock
from dramatiq_bbo.cli.main import main
from dramatiq_bbo.errors import ConfigurationError
from dramatiq_bbo.jobs import inline
from dramatiq_bbo.partitions import manager
from dramatiq_bbo.partitions.listing import PartitionState, list_partitions
from dramatiq_bbo.pipeline import scheduler
from tests.integration.enqueue_support import define_operation, make_todos
from tests.integration.partition_support import (
    hold_stage,
    leftover_tables,
    live_partitions,
    partition_of,
)

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

CELL_LOCAL = "bbo.background_operation_workers_cell_local"
CELL_LOCAL_JOBS = "bbo.background_operation_jobs_cell_local"


@pytest.fixture
def setup(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],  # noqa: F811
) -> Iterator[tuple[type[bbo.BaseOperation], clock.SimulatedClock]]:
    bbo.configure(dsn=configured, scheduler_lock_timeout_seconds=0.3)
    make_todos(conn, 50)
    with clock.simulated() as simulated:
        yield define_operation(), simulated


def enqueue(op: type[bbo.BaseOperation], tag: str, **options: Any) -> Any:
    return bbo.enqueue(op, "todos", "id", arguments={"tag": tag}, **options).operation


def test_the_next_partition_opens_when_the_oldest_row_is_a_duration_old(
    setup: Any, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    simulated.advance(days=30)  # partition 1 is old, but holds no row: an idle base never rotates
    assert manager.manage().opened is None
    first = enqueue(op, "a")
    simulated.advance(days=6, hours=23)
    assert manager.manage().opened is None  # the oldest row is not 7 days old yet
    simulated.advance(hours=2)
    report = manager.manage()
    assert (report.opened, report.current, report.failures) == (2, 2, [])
    assert live_partitions(conn) == [1, 2]
    # The idle unfinished operation moved with its rows, and new operations go to 2.
    assert report.moved == 1 and partition_of(conn, CELL_LOCAL, first.id) == 2
    assert enqueue(op, "b").partition == 2
    # The moved row is 7 days old but was not created in 2: no rotation again.
    simulated.advance(days=1)
    assert manager.manage().opened is None


def test_a_partition_is_dropped_after_retention_and_kept_while_it_holds_live_work(
    setup: Any, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    finished = enqueue(op, "finished")
    conn.execute(
        f"UPDATE {CELL_LOCAL} SET status = 3, finished_at = bbo.now() WHERE id = %s", [finished.id]
    )
    running = enqueue(op, "running")
    # A stage holds it (a live lease) for 30 days: never moved meanwhile.
    conn.execute(f"UPDATE {CELL_LOCAL} SET status = 1 WHERE id = %s", [running.id])
    hold_stage(conn, CELL_LOCAL, running.id, "30 days")
    simulated.advance(days=8)
    assert manager.manage().opened == 2
    assert partition_of(conn, CELL_LOCAL, running.id) == 1
    simulated.advance(days=14, hours=1)
    report = manager.manage()
    assert (report.kept, report.dropped) == ([1], [])
    assert [p.state for p in list_partitions()] == [PartitionState.HELD, PartitionState.CURRENT]
    conn.execute(
        f"UPDATE {CELL_LOCAL} SET lease_expires_at = bbo.now() WHERE id = %s", [running.id]
    )
    report = manager.manage()
    assert (report.moved, report.dropped, report.failures) == (1, [1], [])
    assert live_partitions(conn) == [2] and leftover_tables(conn) == []
    assert partition_of(conn, CELL_LOCAL, running.id) == 2
    assert partition_of(conn, CELL_LOCAL, finished.id) is None  # history, gone with 1
    assert bbo.get_operation(running.id).status == bbo.OperationStatus.ACTIVE


def test_running_jobs_are_not_moved_and_unfinished_jobs_move_with_their_operation(
    setup: Any, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    record = enqueue(op, "a")
    conn.execute(
        f"INSERT INTO {CELL_LOCAL_JOBS} (partition, worker_id, worker_partition, status,"
        " batch_size, sub_batch_size, min_cursor, max_cursor, checkpoint_cursor,"
        " lease_owner, lease_expires_at)"
        " VALUES (1, %s, 1, 1, 10, 5, '[10]', '[100]', '[40]', 'runner',"
        " bbo.now() + interval '8 days 1 hour')",
        [record.id],
    )
    simulated.advance(days=8)
    assert manager.manage().moved == 0  # its job runs under a live lease
    assert partition_of(conn, CELL_LOCAL, record.id) == 1
    simulated.advance(hours=2)  # the lease expired: the scheduler's recovery makes it pending
    scheduler.recover("main")
    report = manager.manage()
    assert report.moved == 1
    job = conn.execute(
        f"SELECT partition, worker_partition, status, checkpoint_cursor FROM {CELL_LOCAL_JOBS}"
        " WHERE worker_id = %s",
        [record.id],
    ).fetchone()
    assert job == (2, 2, 0, [40])
    assert partition_of(conn, CELL_LOCAL, record.id) == 2


def test_enqueue_finds_an_unfinished_duplicate_in_an_older_partition(
    setup: Any, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    first = bbo.enqueue(op, "todos", "id", organization_id=7, user_id=1).operation
    table = "bbo.background_operation_workers"
    hold_stage(conn, table, first.id, "9 days")  # it stays in partition 1 across the rotation
    simulated.advance(days=8)
    assert manager.manage().opened == 2
    again = bbo.enqueue(op, "todos", "id", organization_id=7, user_id=1)
    assert again.duplicate and again.operation.id == first.id and again.operation.partition == 1
    other = bbo.enqueue(op, "todos", "id", organization_id=8, user_id=1)
    assert not other.duplicate and other.operation.partition == 2


def test_a_lock_timeout_fails_the_step_alone_and_the_next_run_does_it(
    setup: Any, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    enqueue(op, "a")
    simulated.advance(days=8)
    with psycopg.connect(dsn) as blocker:  # a long transaction holding the jobs table
        blocker.execute("LOCK TABLE bbo.background_operation_jobs IN SHARE UPDATE EXCLUSIVE MODE")
        report = manager.manage()
        assert report.opened is None and report.ran
        assert [f.split(":")[0] for f in report.failures] == ["open"]
        assert "lock timeout" in report.failures[0]
        blocker.rollback()
    assert live_partitions(conn) == [1] and leftover_tables(conn) == []  # all or nothing
    assert manager.manage().opened == 2


def test_one_manager_at_a_time_and_the_scheduler_runs_it(
    setup: Any, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    enqueue(op, "a")
    simulated.advance(days=8)
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [manager.lock_key()])
        assert manager.manage().ran is False
    report = scheduler.tick("main")
    assert report.partitions is not None and report.partitions.opened == 2
    assert scheduler.tick("main").partitions is None  # once a minute per process
    simulated.advance(minutes=2)
    assert scheduler.tick("main").partitions is not None


def test_a_retirement_interrupted_after_a_detach_is_finished_or_undone(
    setup: Any, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    enqueue(op, "a")
    simulated.advance(days=8)
    assert manager.manage().opened == 2
    simulated.advance(days=15)
    # An earlier run detached one table, then died; meanwhile nothing unfinished is left.
    conn.execute(
        "ALTER TABLE bbo.background_operation_jobs DETACH PARTITION bbo.background_operation_jobs_1"
    )
    assert [p.state for p in list_partitions()][0] == PartitionState.DETACHED
    assert manager.manage().dropped == [1]
    assert live_partitions(conn) == [2] and leftover_tables(conn) == []


def test_a_partition_whose_work_came_back_is_attached_again(
    setup: Any, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    record = enqueue(op, "a")
    hold_stage(conn, CELL_LOCAL, record.id, "30 days")
    simulated.advance(days=8)
    manager.manage()
    simulated.advance(days=15)
    conn.execute(  # half a retirement, with the operation still running in it
        "ALTER TABLE bbo.background_operation_workers_cell_local"
        " DETACH PARTITION bbo.background_operation_workers_cell_local_1"
    )
    report = manager.manage()
    assert report.kept == [1] and live_partitions(conn) == [1, 2]
    assert bbo.get_operation(record.id).partition == 1


def test_the_settings_are_checked(configured: str) -> None:
    for bad in ({"partition_duration_days": 0}, {"retention_days": -1.0}, {"retention_days": "x"}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            bbo.configure(dsn=configured, **bad)
    bbo.configure(dsn=configured, partition_duration_days=1.5, retention_days=3)
    assert bbo.settings().retention_days == 3.0


def test_the_cli_lists_each_partition_with_rows_age_and_state(
    setup: Any, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    op, simulated = setup
    enqueue(op, "a")
    enqueue(op, "b", organization_id=3, user_id=4)
    simulated.advance(days=8)
    manager.manage()
    enqueue(op, "c")
    assert main(["partitions", "--dsn", dsn, "--database", "main"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["PARTITION", "STATE", "AGE"]
    first, second = (line.split() for line in lines[2:4])
    assert first[:3] == ["1", "older", "8d"] and second[:2] == ["2", "current"]
    assert main(["partitions", "--dsn", dsn, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["state"] for p in listed] == ["older", "current"]
    current = listed[1]["tables"]
    assert current["background_operation_workers_cell_local"] == {"rows": 2, "unfinished": 2}
    assert current["background_operation_workers"] == {"rows": 1, "unfinished": 1}
    assert listed[0]["tables"]["background_operation_workers_cell_local"]["rows"] == 0


def test_run_to_completion_follows_an_operation_moved_after_it_was_read(
    setup: Any, conn: psycopg.Connection[Any]
) -> None:
    op, simulated = setup
    stale = enqueue(op, "a")  # as run_to_completion read it: in partition 1
    simulated.advance(days=8)
    assert manager.manage().moved == 1
    taken = inline._take_stage("main", stale, "run_to_completion:test")
    assert taken.partition == 2
    lease = conn.execute(f"SELECT lease_owner FROM {CELL_LOCAL} WHERE id = %s", [stale.id])
    assert lease.fetchone() == ("run_to_completion:test",)
    assert bbo.run_to_completion(stale.id).status == bbo.OperationStatus.FINISHED
