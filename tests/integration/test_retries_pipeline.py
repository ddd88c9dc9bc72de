"""Retries, timeouts, splitting and the failure threshold, through the pipeline's own
stages (orchestrator → runner, called in the test thread; see ``pipeline_support``) on a real
Postgres. Timeouts are real ``statement_timeout`` cancellations of a ``pg_sleep``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.operation import unregister
from dramatiq_bbo.state.records import JobRecord, JobStatus, OperationStatus
from tests.integration.pipeline_support import drive, no_broker  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_broker")

#: (job id, attempt, sub-batch size, first id, last id, outcome) of every sub-batch seen
TRACE: list[tuple[Any, int, int, int, int, str]] = []

TIMEOUT_MS = 100


@pytest.fixture(autouse=True)
def trace() -> Iterator[list[tuple[Any, int, int, int, int, str]]]:
    TRACE.clear()
    yield TRACE
    TRACE.clear()


@pytest.fixture
def setup_pipeline(dsn: str) -> Iterator[Callable[..., None]]:
    """``setup_pipeline(**settings)``: configure bbo on the test database with settings."""

    def configure(**settings: Any) -> None:
        bbo.configure(dsn=dsn, statement_timeout_ms=TIMEOUT_MS, **settings)

    yield configure
    bbo.reset()


@pytest.fixture
def define() -> Iterator[Callable[..., type[bbo.BaseOperation]]]:
    """A visiting operation class: ``define(fail=..., slow=...)`` where ``fail(sub_batch, op)``
    says whether to raise and ``slow(sub_batch, op)`` whether to time out (pg_sleep)."""
    names: list[str] = []

    def make(
        *,
        fail: Callable[[Any, Any], bool] = lambda sb, op: False,
        slow: Callable[[Any, Any], bool] = lambda sb, op: False,
    ) -> type[bbo.BaseOperation]:
        def perform(self: Any) -> None:
            for sub_batch in self.each_sub_batch():
                first, last = sub_batch.bounds
                entry = (self.job.id, self.job.attempts, self.job.sub_batch_size, first, last)
                sub_batch.update(visits=self.table.visits + 1)
                if slow(sub_batch, self):
                    TRACE.append((*entry, "timeout"))
                    sub_batch.execute("SELECT pg_sleep(5)")
                if fail(sub_batch, self):
                    TRACE.append((*entry, "error"))
                    raise RuntimeError(f"cannot process {first}..{last}")
                TRACE.append((*entry, "ok"))

        name = f"retry_op_{len(names)}_{id(perform):x}"
        names.append(name)
        return type(name, (bbo.BaseOperation,), {"name": name, "perform": perform})

    yield make
    for name in names:
        unregister(name)


def make_rows(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT g FROM generate_series(1, %s) AS g", [rows])
    conn.execute("ANALYZE items")


def visits(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return dict(conn.execute("SELECT id, visits FROM items ORDER BY id").fetchall())


def enqueue(cls: type[bbo.BaseOperation], **sizes: Any) -> bbo.OperationRecord:
    sizes.setdefault("pause_ms", 0)
    sizes.setdefault("interval_seconds", 0)
    sizes.setdefault("min_batch_size", 1)
    sizes.setdefault("max_batch_size", sizes["batch_size"])  # the optimizer keeps the size
    return bbo.enqueue(cls, "items", "id", **sizes).operation


def ids_of(job: JobRecord) -> range:
    return range(job.min_cursor[0], job.max_cursor[0] + 1)


# -- retries ----------------------------------------------------------------------------------
def test_a_failing_job_is_retried_up_to_max_attempts_from_its_checkpoint_then_counted_failed(
    setup_pipeline: Callable[..., None],
    define: Callable[..., type[bbo.BaseOperation]],
    conn: psycopg.Connection[Any],
) -> None:
    setup_pipeline()  # max_attempts: the default, 3
    make_rows(conn, 30)
    # ids 11..20 are the second job; its second sub-batch (16..20) always raises
    cls = define(fail=lambda sb, op: sb.bounds[0] == 16)
    operation = enqueue(cls, batch_size=10, sub_batch_size=5)

    final, outcomes = drive(operation.id)

    jobs = bbo.list_jobs(final)
    assert [(j.min_cursor, j.max_cursor) for j in jobs] == [([1], [10]), ([11], [20]), ([21], [30])]
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED]
    failed = jobs[1]
    assert failed.attempts == 3
    assert failed.exception_class == "RuntimeError"
    assert failed.checkpoint_cursor == [15]  # its first sub-batch committed once
    # three runs of the failing job, each resuming after the checkpoint
    runs = [
        (attempt, first, result) for job, attempt, _, first, _, result in TRACE if job == failed.id
    ]
    assert runs == [(1, 11, "ok"), (1, 16, "error"), (2, 16, "error"), (3, 16, "error")]
    assert len(outcomes) == 5  # 1 + 3 attempts + 1
    # exhausted with a job failed for good: the operation failed, after running the rest
    assert final.status == OperationStatus.FAILED
    seen = visits(conn)
    assert all(seen[i] == 1 for i in range(1, 31) if not 16 <= i <= 20)
    assert all(seen[i] == 0 for i in range(16, 21))  # every failing sub-batch rolled back


def test_a_job_that_succeeds_on_a_retry_lets_the_operation_finish(
    setup_pipeline: Callable[..., None],
    define: Callable[..., type[bbo.BaseOperation]],
    conn: psycopg.Connection[Any],
) -> None:
    setup_pipeline()
    make_rows(conn, 20)
    cls = define(fail=lambda sb, op: sb.bounds[0] == 6 and op.job.attempts < 3)
    operation = enqueue(cls, batch_size=10, sub_batch_size=5)

    final, _ = drive(operation.id)

    assert final.status == OperationStatus.FINISHED
    assert [j.attempts for j in bbo.list_jobs(final)] == [3, 1]
    assert set(visits(conn).values()) == {1}


# -- timeouts: shrinking, then splitting --------------------------------------------------------
def test_sub_batch_timeouts_shrink_the_sub_batch_by_a_quarter_down_to_35_percent(
    setup_pipeline: Callable[..., None],
    define: Callable[..., type[bbo.BaseOperation]],
    conn: psycopg.Connection[Any],
) -> None:
    setup_pipeline(max_attempts=6)
    make_rows(conn, 40)
    # the original job keeps timing out at any size; its split halves do not
    cls = define(slow=lambda sb, op: "split_from" not in op.job.metrics)
    operation = enqueue(cls, batch_size=40, sub_batch_size=20)

    final, _ = drive(operation.id)

    first = bbo.list_jobs(final)[0]
    sizes = [(attempt, size) for job, attempt, size, *_ in TRACE if job == first.id]
    # 20 → 15 → 11 → 8 → 7 (the floor: ceil(0.35 × 20)) → 7
    assert sizes == [(1, 20), (2, 15), (3, 11), (4, 8), (5, 7), (6, 7)]
    assert {entry[-1] for entry in TRACE if entry[0] == first.id} == {"timeout"}
    assert first.status == JobStatus.FAILED
    assert first.exception_class == "dramatiq_bbo.errors.SubBatchTimeout"
    assert first.metrics["timeout_kind"] == "statement_timeout"
    assert final.status == OperationStatus.FINISHED  # the halves did the work
    assert set(visits(conn).values()) == {1}


def test_a_job_timing_out_on_its_last_attempt_is_split_into_two_halves_of_what_is_left(
    setup_pipeline: Callable[..., None],
    define: Callable[..., type[bbo.BaseOperation]],
    conn: psycopg.Connection[Any],
) -> None:
    setup_pipeline()
    make_rows(conn, 60)
    # rows 25..40 are slow unless the sub-batch holds 4 rows or fewer
    cls = define(slow=lambda sb, op: sb.bounds[0] <= 40 and sb.bounds[1] >= 25 and len(sb) > 4)
    operation = enqueue(cls, batch_size=40, sub_batch_size=10)

    final, _ = drive(operation.id)

    jobs = {str(j.id): j for j in bbo.list_jobs(final)}
    parent = next(iter(jobs.values()))
    assert parent.status == JobStatus.FAILED and parent.attempts == 3
    assert parent.checkpoint_cursor == [20]  # 1..10 and 11..20 committed on the first attempt
    attempts = [(a, size, first) for j, a, size, first, _, r in TRACE if j == parent.id]
    assert attempts == [(1, 10, 1), (1, 10, 11), (1, 10, 21), (2, 7, 21), (3, 5, 21)]

    children = [jobs[child] for child in parent.metrics["split_into"]]
    assert len(children) == 2
    assert [(c.min_cursor, c.max_cursor) for c in children] == [([21], [30]), ([31], [40])]
    covered = [i for c in children for i in ids_of(c)]
    assert covered == list(range(21, 41))  # exactly what the parent left: no gap, no overlap
    for child in children:
        assert child.metrics["split_from"] == str(parent.id)
        assert child.status == JobStatus.SUCCEEDED and child.attempts == 1
        assert child.sub_batch_size == 4  # shrunk once more from 5, floor ceil(3.5)
        assert child.processed_tuple_count == 10

    # the next job starts after the parent's range; the split does not fail the operation
    later = [j for j in jobs.values() if j is not parent and j not in children]
    assert [(j.min_cursor, j.status) for j in later] == [([41], JobStatus.SUCCEEDED)]
    assert final.status == OperationStatus.FINISHED
    assert final.processed_tuple_count == 60
    assert set(visits(conn).values()) == {1}  # every row exactly once


def test_a_one_row_job_that_still_times_out_fails_for_good(
    setup_pipeline: Callable[..., None],
    define: Callable[..., type[bbo.BaseOperation]],
    conn: psycopg.Connection[Any],
) -> None:
    setup_pipeline(max_attempts=2)
    make_rows(conn, 3)
    cls = define(slow=lambda sb, op: sb.bounds[0] <= 2 <= sb.bounds[1])
    operation = enqueue(cls, batch_size=1, sub_batch_size=1)

    final, _ = drive(operation.id)

    jobs = bbo.list_jobs(final)
    assert [(j.min_cursor, j.status) for j in jobs] == [
        ([1], JobStatus.SUCCEEDED),
        ([2], JobStatus.FAILED),
        ([3], JobStatus.SUCCEEDED),
    ]
    assert jobs[1].metrics["split_into"] == []  # nothing to split: it stays failed
    assert final.status == OperationStatus.FAILED


# -- the operation's failure threshold -----------------------------------------------------------
def test_the_operation_fails_once_over_half_of_at_least_50_jobs_failed(
    setup_pipeline: Callable[..., None],
    define: Callable[..., type[bbo.BaseOperation]],
    conn: psycopg.Connection[Any],
) -> None:
    setup_pipeline(max_attempts=1)
    make_rows(conn, 120)
    cls = define(fail=lambda sb, op: sb.bounds[0] % 2 == 1)  # every odd id
    operation = enqueue(cls, batch_size=1, sub_batch_size=1)

    final, outcomes = drive(operation.id)

    assert final.status == OperationStatus.FAILED
    jobs = bbo.list_jobs(final)
    # job 50 makes 25 failed of 50 (not more than half); job 51 (id 51) makes 26 of 51
    assert len(jobs) == len(outcomes) == 51
    assert jobs[-1].min_cursor == [51] and jobs[-1].status == JobStatus.FAILED
    assert sum(j.status == JobStatus.FAILED for j in jobs) == 26
    assert final.next_cursor == [51]  # the rest of the range was never handed out
    assert sum(visits(conn).values()) == 25


def test_a_split_job_does_not_count_towards_the_failure_threshold(
    setup_pipeline: Callable[..., None],
    define: Callable[..., type[bbo.BaseOperation]],
    conn: psycopg.Connection[Any],
) -> None:
    setup_pipeline(max_attempts=1)
    make_rows(conn, 56)

    # Per 4 rows, 4 jobs: (4k+1, 4k+2) times out and is split; its first half raises, its
    # second half succeeds; (4k+3, 4k+4) raises. Real failures: exactly half of the jobs at
    # every check, never more; counting the split parents too would be 3 of 4.
    def slow(sb: Any, op: Any) -> bool:
        return len(sb) > 1 and sb.bounds[0] % 4 == 1

    def fail(sb: Any, op: Any) -> bool:
        return (len(sb) == 1 and sb.bounds[0] % 4 == 1) or sb.bounds[0] % 4 == 3

    cls = define(slow=slow, fail=fail)
    operation = enqueue(cls, batch_size=2, sub_batch_size=2)

    final, _ = drive(operation.id)

    jobs = bbo.list_jobs(final)
    assert len(jobs) == 56  # the whole range ran: the threshold never tripped
    parents = [j for j in jobs if "split_into" in j.metrics]
    assert len(parents) == 14 and all(len(j.metrics["split_into"]) == 2 for j in parents)
    assert sum(j.status == JobStatus.FAILED for j in jobs) == 14 + 28
    assert final.next_cursor == [56]
    # ...and ends failed because of the real failures left, not because of the splits
    assert final.status == OperationStatus.FAILED
    assert [i for i, v in visits(conn).items() if v] == list(range(2, 57, 4))
