"""Time to finish at the default interval (120 s): an operation ends with its last job, a
configuration that ran before starts from the batch size it learned, and the optimizer steps
faster while jobs are far below their target — each still within the target.

The pipeline's stages run in the test thread (:mod:`tests.integration.pipeline_support`): the
orchestrator, then the runner and the transaction that chains the next stage. The chained
delay (one interval) is not waited for, so what these tests prove is what that transaction
decides: finished now, or the next job one interval later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.jobs.optimizer import FAR_AIM, TARGET_EFFICIENCY
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.integration.pipeline_support import no_broker, run_one_job  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_broker")

ROWS = 250


class Visit(bbo.BaseOperation):
    """Count a visit on every row of the range (any arguments: they only tell operations apart)."""

    name = "time_to_finish.visit"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


class SleepPerRow(bbo.BaseOperation):
    """Work proportional to the rows: a sleep per row, then a visit."""

    name = "time_to_finish.sleep_per_row"
    pause_ms = 0
    seconds_per_row = 0.0005

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            time.sleep(self.seconds_per_row * len(sub_batch))
            sub_batch.update(visits=self.table.visits + 1)


@pytest.fixture
def rows(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Default settings, but jobs of 100 rows to start with (so that a few jobs cover it)."""
    bbo.configure(dsn=dsn, batch_size=100, min_batch_size=100, sub_batch_size=50)
    conn.execute("CREATE TABLE rows (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO rows (id) SELECT generate_series(1, %s)", [ROWS])
    conn.execute("ANALYZE rows")
    yield conn
    bbo.reset()


def run_until_finished(operation_id: Any, most: int = 10) -> list[Any]:
    """Jobs, one after the other, until the operation is no longer active; their outcomes."""
    outcomes = []
    while bbo.get_operation(operation_id).status != OperationStatus.FINISHED:
        assert len(outcomes) < most, "the operation did not finish"
        outcome = run_one_job(operation_id)
        assert outcome is not None, "the orchestrator had to end it: the runner did not"
        assert outcome.status == JobStatus.SUCCEEDED
        outcomes.append(outcome)
    return outcomes


# -- (1) finished when its last job ends ----------------------------------------------------
def test_operation_finishes_in_the_transaction_of_its_last_job_not_one_interval_later(rows):
    operation = bbo.enqueue(Visit, "rows", "id", arguments={"run": 1}).operation
    assert operation.interval_seconds == 120  # the default

    first = run_one_job(operation.id)
    assert first is not None and first.job.processed_tuple_count == 100
    between = bbo.get_operation(operation.id)
    assert between.status == OperationStatus.ACTIVE  # rows are left: the next job in 120 s
    assert between.lease_owner is not None  # the chained orchestrator message holds it

    outcomes = [first, *run_until_finished(operation.id)]
    finished = bbo.get_operation(operation.id)
    last_job = outcomes[-1].job
    assert sum(o.job.processed_tuple_count for o in outcomes) == ROWS
    assert finished.processed_tuple_count == finished.total_tuple_count == ROWS
    assert finished.lease_owner is None and finished.lease_expires_at is None
    # finished by the runner's own transaction, right after its last job
    assert 0 <= (finished.finished_at - last_job.finished_at).total_seconds() < 5
    assert rows.execute("SELECT count(*) FROM rows WHERE visits = 1").fetchone() == (ROWS,)


# -- (2) the learned batch size ---------------------------------------------------------------
def learned(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT job_class_name, table_schema, table_name, column_name, database_name,"
        " batch_size FROM bbo.learned_batch_sizes"
    ).fetchall()


def test_a_configuration_that_ran_before_starts_from_the_size_it_learned(rows):
    assert learned(rows) == []
    first = bbo.enqueue(Visit, "rows", "id", arguments={"user": 1}).operation
    assert first.batch_size == 100  # nothing learned yet: the setting
    run_until_finished(first.id)
    size = bbo.get_operation(first.id).batch_size
    assert size > 100, "the optimizer grew the fast jobs"
    assert learned(rows) == [(Visit.name, "public", "rows", "id", "main", size)]

    def start(**kwargs: Any) -> int:
        return bbo.enqueue(Visit, "rows", "id", **kwargs).operation.batch_size

    # another user's operation of the same class, table, column and database
    assert start(arguments={"user": 2}) == size
    # within its own bounds, and never under its sub-batch
    assert start(arguments={"user": 3}, max_batch_size=150) == 150
    assert start(arguments={"user": 4}, min_batch_size=size + 7) == size + 7
    # aimed at a shorter target: proportionally smaller; a longer one does not grow it
    assert start(arguments={"user": 5}, interval_seconds=60) == max(100, round(size / 2))
    assert start(arguments={"user": 6}, interval_seconds=240) == size
    # the call's batch_size wins
    assert start(arguments={"user": 7}, batch_size=120) == 120


def test_another_configuration_does_not_take_the_learned_size(rows):
    rows.execute("ALTER TABLE rows ADD COLUMN other bigint")
    rows.execute("UPDATE rows SET other = id")
    rows.execute("ALTER TABLE rows ALTER COLUMN other SET NOT NULL")
    rows.execute("CREATE UNIQUE INDEX ON rows (other)")
    run_until_finished(bbo.enqueue(Visit, "rows", "id", arguments={"user": 1}).operation.id)
    assert len(learned(rows)) == 1
    assert bbo.enqueue(Visit, "rows", "other", arguments={}).operation.batch_size == 100
    assert bbo.enqueue(SleepPerRow, "rows", "id", arguments={}).operation.batch_size == 100


# -- (3) larger steps far below the target -------------------------------------------------------
def test_optimizer_steps_faster_far_below_the_target_and_each_job_stays_within_it(rows):
    rows.execute("INSERT INTO rows (id) SELECT generate_series(%s, 20000)", [ROWS + 1])
    interval = 2.0
    target = TARGET_EFFICIENCY * interval
    operation = bbo.enqueue(
        SleepPerRow, "rows", "id", interval_seconds=interval, sub_batch_size=100
    ).operation
    outcomes = [run_one_job(operation.id) for _ in range(3)]
    sizes = [o.job.batch_size for o in outcomes if o is not None]
    durations = [float(o.job.metrics["duration_seconds"]) for o in outcomes if o is not None]
    table = ", ".join(f"{s} rows in {d:.3f}s" for s, d in zip(sizes, durations, strict=True))
    assert sizes[0] == 100
    # 100 rows take ~3% of the target: the next job is sized for half of it (×10 at most)
    assert sizes[1] >= 3 * sizes[0], table
    per_row = durations[1] / sizes[1]
    assert sizes[1] * per_row <= FAR_AIM * target * 1.5, table
    # each job within the target share of its interval
    assert all(d <= target for d in durations), table
