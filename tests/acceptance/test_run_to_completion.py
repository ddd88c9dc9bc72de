"""Issue 3 acceptance: operations run to completion in-process on a real Postgres, delete exactly
what they select, and visit every row exactly once through failures and a killed process."""

from __future__ import annotations

import datetime
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.acceptance.killable_operation import KILL_AFTER, STYLES
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


class DeleteDoneTodos(bbo.BaseOperation):
    """The README's example: one user's done todos older than a cutoff."""

    name = "acceptance.delete_done_todos"
    operation_name = "delete_all"
    feature_category = "team_planning"
    cursor = ("partition_id", "id")
    pause_ms = 0

    def scope(self, query: Any) -> Any:
        return query.where(self.table.user_id == self.arguments["user_id"])

    def perform(self) -> None:
        cutoff = datetime.datetime.fromisoformat(self.arguments["delete_until"])
        table = self.table
        for sub_batch in self.each_sub_batch():
            sub_batch.where(table.done == True, table.updated_at < cutoff).delete()  # noqa: E712


def make_todos(conn: psycopg.Connection[Any]) -> None:
    """100,000 todos in 4 partitions, every 7th id missing, 5 users, mixed done/updated_at."""
    conn.execute(
        "CREATE TABLE todos (partition_id int NOT NULL, id bigint NOT NULL,"
        " user_id bigint NOT NULL, done boolean NOT NULL, updated_at timestamptz NOT NULL,"
        " title text NOT NULL, PRIMARY KEY (partition_id, id))"
    )
    # The scope is indexed: with user_id fixed, this index is in (partition_id, id) order.
    conn.execute("CREATE INDEX todos_user_walk ON todos (user_id, partition_id, id)")
    conn.execute(
        "INSERT INTO todos"
        " SELECT p, i, (i * 3 + p) % 5 + 1, (i * 7 + p) % 3 = 0,"
        "  timestamptz '2024-01-01 00:00:00+00' + ((i * 13 + p) % 20) * interval '1 day',"
        "  'todo ' || p || '/' || i"
        " FROM generate_series(1, 4) AS p, generate_series(1, 29166) AS i WHERE i % 7 <> 0"
    )
    conn.execute("ANALYZE todos")


def snapshot(conn: psycopg.Connection[Any]) -> set[tuple[Any, ...]]:
    return set(conn.execute("SELECT * FROM todos").fetchall())


def test_a_scoped_delete_over_100k_rows_deletes_exactly_its_selection(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    make_todos(conn)
    before = snapshot(conn)
    assert len(before) == 100_000
    cutoff = datetime.datetime(2024, 1, 11, tzinfo=datetime.UTC)
    selected = {r for r in before if r[2] == 3 and r[3] and r[4] < cutoff}
    in_scope = [r for r in before if r[2] == 3]
    assert 0 < len(selected) < len(in_scope) < len(before)

    result = bbo.enqueue(
        DeleteDoneTodos,
        "todos",
        "id",
        arguments={"user_id": 3, "delete_until": cutoff.isoformat()},
        batch_size=5000,
        sub_batch_size=500,
    )
    finished = bbo.run_to_completion(result.operation.id)

    assert snapshot(conn) == before - selected
    assert finished.status == OperationStatus.FINISHED
    assert finished.processed_tuple_count == len(in_scope)  # only the scope was walked
    assert finished.affected_tuple_count == len(selected)
    jobs = bbo.list_jobs(finished)
    assert jobs[0].batch_size == 5000  # then the optimizer sizes them, as in the pipeline
    assert len(jobs) <= -(-len(in_scope) // 5000)
    assert sum(j.processed_tuple_count for j in jobs) == len(in_scope)
    assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}


class FlakyVisit(bbo.BaseOperation):
    """One visit per row; each job's first attempt raises at a (seeded) random sub-batch,
    after that sub-batch's update ran."""

    name = "acceptance.flaky_visit"
    pause_ms = 0

    def perform(self) -> None:
        rng = random.Random(f"{self.arguments['seed']}/{self.job.min_cursor}")
        fail_at = rng.randrange(self.job.batch_size // self.job.sub_batch_size)
        for index, sub_batch in enumerate(self.each_sub_batch()):
            sub_batch.update(visits=self.table.visits + 1)
            if self.job.attempts == 1 and index == fail_at:
                raise RuntimeError(f"flaky failure in sub-batch {index}")


def make_counters(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute("CREATE TABLE counters (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute(
        "INSERT INTO counters (id) SELECT g FROM generate_series(1, %s) AS g WHERE g %% 7 <> 0",
        [rows],
    )


def visit_counts(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return dict(conn.execute("SELECT visits, count(*) FROM counters GROUP BY visits").fetchall())


def test_failures_at_random_sub_batches_still_visit_every_row_exactly_once(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 8000)
    total = 8000 - 8000 // 7
    result = bbo.enqueue(
        FlakyVisit,
        "counters",
        "id",
        arguments={"seed": 20240601},
        batch_size=1000,
        sub_batch_size=100,
    )

    finished = bbo.run_to_completion(result.operation.id)

    assert visit_counts(conn) == {1: total}
    jobs = bbo.list_jobs(finished)
    assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
    assert sum(j.attempts == 2 for j in jobs) >= len(jobs) - 1  # retried from checkpoints
    # get_operation tells the same story
    record = bbo.get_operation(result.operation.id)
    assert record.status == OperationStatus.FINISHED
    assert record.processed_tuple_count == total == record.affected_tuple_count
    assert record.finished_at is not None and record.started_at is not None
    assert record.started_at <= record.finished_at
    assert record.next_cursor == record.max_cursor


def job_cursors(operation_id: Any) -> list[tuple[Any, Any, Any]]:
    """Each job's (min, max, checkpoint) cursors, in range order."""
    return sorted(
        (j.min_cursor, j.max_cursor, j.checkpoint_cursor) for j in bbo.list_jobs(operation_id)
    )


@pytest.mark.parametrize("style", sorted(STYLES))
def test_a_killed_process_neither_repeats_nor_skips_a_sub_batch(
    configured: str, conn: psycopg.Connection[Any], style: str
) -> None:
    """Written with perform() or with process(), the same checkpoints and one visit per row."""
    bbo.configure(dsn=configured, lease_seconds=1)
    make_counters(conn, 3500)
    total = 3500 - 3500 // 7
    ids = [[row[0]] for row in conn.execute("SELECT id FROM counters ORDER BY id")]
    result = bbo.enqueue(
        STYLES[style],
        "counters",
        "id",
        batch_size=1000,
        sub_batch_size=100,
        # job sizes pinned, so that the job ranges are the same whatever the optimizer measures
        min_batch_size=1000,
        max_batch_size=1000,
    )
    operation_id = result.operation.id
    code = textwrap.dedent(
        f"""
        import dramatiq_bbo as bbo
        import tests.acceptance.killable_operation
        bbo.configure(dsn={configured!r}, lease_seconds=1)
        bbo.run_to_completion({operation_id!r})
        """
    )
    env = {**os.environ, KILL_AFTER: "14", "PYTHONPATH": str(ROOT)}
    died = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert died.returncode == 9, died.stderr.decode()

    # 13 sub-batches committed (job 1: 10, job 2: 3); the 14th died uncommitted.
    assert visit_counts(conn) == {1: 1300, 0: total - 1300}
    assert (
        conn.execute("SELECT max(id) FROM counters WHERE visits = 1").fetchone()[0] == ids[1299][0]
    )
    assert job_cursors(operation_id) == [
        (ids[0], ids[999], ids[999]),
        (ids[1000], ids[1999], ids[1299]),  # the checkpoint of the last committed sub-batch
    ]
    abandoned = [j for j in bbo.list_jobs(operation_id) if j.status == JobStatus.RUNNING]
    assert len(abandoned) == 1 and abandoned[0].checkpoint_cursor is not None
    wait_until(
        lambda: conn.execute(
            "SELECT lease_expires_at < now() FROM bbo.background_operation_jobs_cell_local"
            " WHERE id = %s",
            [abandoned[0].id],
        ).fetchone()[0]
    )

    finished = bbo.run_to_completion(operation_id)

    assert visit_counts(conn) == {1: total}
    assert finished.status == OperationStatus.FINISHED
    assert finished.processed_tuple_count == total
    assert job_cursors(operation_id) == [
        (ids[0], ids[999], ids[999]),
        (ids[1000], ids[1999], ids[1999]),
        (ids[2000], ids[2999], ids[2999]),
    ]
    resumed = {j.id: j for j in bbo.list_jobs(operation_id)}[abandoned[0].id]
    # the kill was an interruption, not a failed attempt
    assert (resumed.status, resumed.attempts, resumed.interruptions) == (JobStatus.SUCCEEDED, 1, 1)


class NothingToDo(bbo.BaseOperation):
    name = "acceptance.nothing_to_do"
    pause_ms = 0

    def scope(self, query: Any) -> Any:
        return query.where(self.table.visits < self.arguments.get("below", 1_000_000))

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.delete()


@pytest.mark.parametrize("empty", ["table", "scope"])
def test_an_operation_over_an_empty_range_finishes_at_once(
    configured: str, conn: psycopg.Connection[Any], empty: str
) -> None:
    make_counters(conn, 0 if empty == "table" else 50)
    result = bbo.enqueue(NothingToDo, "counters", "id", arguments={"below": 0})
    assert result.operation.max_cursor is None

    finished = bbo.run_to_completion(result.operation.id)

    assert finished.status == OperationStatus.FINISHED
    assert finished.finished_at is not None
    assert finished.processed_tuple_count == 0
    assert bbo.list_jobs(finished) == []


@pytest.mark.parametrize("status", [OperationStatus.PAUSED, OperationStatus.CANCELLED])
def test_a_paused_or_cancelled_operation_is_left_alone(
    configured: str, conn: psycopg.Connection[Any], status: OperationStatus
) -> None:
    make_counters(conn, 50)
    result = bbo.enqueue(NothingToDo, "counters", "id")
    conn.execute(
        "UPDATE bbo.background_operation_workers_cell_local SET status = %s WHERE id = %s",
        [int(status), result.operation.id],
    )

    record = bbo.run_to_completion(result.operation.id)

    assert record.status == status
    assert bbo.list_jobs(record) == []
    assert conn.execute("SELECT count(*) FROM counters").fetchone() == (50 - 50 // 7,)
