"""Ending a job and creating + claiming the next in one transaction (``end_and_next``), and
``run_to_completion`` running its jobs as such a chain: every range handed out once, even
to two runners racing on one operation; the claim, the lease and the counters as a separate
claim would leave them; an operator's size kept; a retried end recognised."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.errors import InvalidTransition, LeaseLost
from dramatiq_bbo.jobs.claims import new_owner
from dramatiq_bbo.jobs.run import create_next_job, end_and_next
from dramatiq_bbo.state.records import JobRecord, JobStatus, OperationRecord, OperationStatus


class Visit(bbo.BaseOperation):
    name = "test_job_chaining.visit"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


def make_items(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT g FROM generate_series(1, %s) AS g", [rows])


def enqueue(**kwargs: Any) -> OperationRecord:
    """An active operation (as a runner finds it) over ``items``."""
    operation = bbo.enqueue(Visit, "items", "id", pause_ms=0, **kwargs).operation
    with REGISTRY.connection() as pooled:
        pooled.execute(
            "UPDATE bbo.background_operation_workers_cell_local"
            " SET status = 1, started_at = now() WHERE id = %s",
            [operation.id],
        )
    return bbo.get_operation(operation.id)


def succeeded(job: JobRecord, owner: str) -> dict[str, Any]:
    """``execution_finish_job`` parameters of a successful run held by ``owner``."""
    return {
        "status": int(JobStatus.SUCCEEDED),
        "refund": 0,
        "interruption": 0,
        "exception_class": None,
        "exception_message": None,
        "metrics": json.dumps({"duration_seconds": 0.01, "runs": 1}),
        "partition": job.partition,
        "id": job.id,
        "lease_owner": owner,
    }


def assert_disjoint_and_complete(jobs: list[JobRecord], rows: int) -> None:
    ranges = sorted((j.min_cursor[0], j.max_cursor[0]) for j in jobs)
    assert ranges[0][0] == 1 and ranges[-1][1] == rows
    for (_, last), (first, _) in zip(ranges, ranges[1:], strict=False):
        assert first == last + 1, ranges  # no row handed out twice, none skipped


def test_run_to_completion_chains_jobs_grown_by_the_optimizer(configured: str, conn) -> None:
    make_items(conn, 6000)
    operation = enqueue(batch_size=200, sub_batch_size=100, min_batch_size=100)
    finished = bbo.run_to_completion(operation.id)

    assert finished.status == OperationStatus.FINISHED
    assert finished.processed_tuple_count == 6000
    assert conn.execute("SELECT count(*) FROM items WHERE visits <> 1").fetchone() == (0,)
    jobs = bbo.list_jobs(finished)
    assert_disjoint_and_complete(jobs, 6000)
    assert {(j.status, j.attempts, j.lease_owner) for j in jobs} == {(JobStatus.SUCCEEDED, 1, None)}
    assert sum(j.processed_tuple_count for j in jobs) == 6000
    assert jobs[0].batch_size == 200 and jobs[1].batch_size > 200  # grown, as in the pipeline
    assert finished.next_cursor == finished.max_cursor


def test_end_and_next_ends_the_job_and_claims_the_next_range(configured: str, conn) -> None:
    make_items(conn, 50)
    operation = enqueue(batch_size=10, sub_batch_size=10, min_batch_size=10, max_batch_size=10)
    owner, successor = new_owner(), new_owner()
    with REGISTRY.connection() as pooled:
        first = create_next_job(pooled, operation, claim_for=owner)
        assert first is not None and (first.status, first.lease_owner) == (1, owner)
        with pytest.raises(LeaseLost):  # not this runner's job: nothing written
            end_and_next(pooled, operation, first, succeeded(first, "someone else"))
        assert bbo.get_operation(operation.id).next_cursor == [10]
        chained = end_and_next(
            pooled,
            bbo.get_operation(operation.id),
            first,
            succeeded(first, owner),
            claim_for=successor,
        )
    done, following = chained.job, chained.next_job
    assert (done.status, done.lease_owner, done.lease_expires_at) == (3, None, None)
    assert following is not None
    assert (following.min_cursor, following.max_cursor) == ([11], [20])
    assert (following.status, following.attempts, following.interruptions) == (1, 1, 0)
    assert following.lease_owner == successor and following.started_at is not None
    assert following.lease_expires_at is not None and following.heartbeat_at is not None
    after = bbo.get_operation(operation.id)
    assert after.next_cursor == [20] and after.last_run_at is not None
    assert chained.operation.next_cursor == [20]


def test_no_claimed_next_job_while_another_job_runs(configured: str, conn) -> None:
    make_items(conn, 50)
    operation = enqueue(batch_size=10, sub_batch_size=10, min_batch_size=10, max_batch_size=10)
    owner = new_owner()
    with REGISTRY.connection() as pooled:
        first = create_next_job(pooled, operation, claim_for=owner)
        assert first is not None
        with pytest.raises(InvalidTransition):  # one running job per operation
            create_next_job(pooled, bbo.get_operation(operation.id), claim_for=new_owner())
        conn.execute(  # another runner's job, live (as after a takeover elsewhere)
            "INSERT INTO bbo.background_operation_jobs_cell_local (partition, worker_id,"
            " worker_partition, status, batch_size, sub_batch_size, pause_ms, min_cursor,"
            " max_cursor, lease_owner, lease_expires_at)"
            " SELECT partition, worker_id, worker_partition, 1, 10, 10, 0, '[41]', '[50]',"
            " 'elsewhere', now() + interval '1 minute'"
            " FROM bbo.background_operation_jobs_cell_local WHERE id = %s",
            [first.id],
        )
        chained = end_and_next(
            pooled, operation, first, succeeded(first, owner), claim_for=new_owner()
        )
    assert chained.job.status == JobStatus.SUCCEEDED and chained.next_job is None
    assert bbo.get_operation(operation.id).next_cursor == [10]


def test_two_racing_runners_never_hand_out_a_range_twice(configured: str, conn) -> None:
    rows = 3000
    make_items(conn, rows)
    operation = enqueue(batch_size=50, sub_batch_size=50, min_batch_size=50, max_batch_size=50)
    errors: list[BaseException] = []

    def chaining_runner() -> None:  # ends each job creating + claiming the next
        with REGISTRY.connection() as pooled:
            owner = new_owner()
            job = None
            while job is None:
                try:
                    job = create_next_job(pooled, operation, claim_for=owner)  # a stale record
                except InvalidTransition:
                    continue
                if job is None:
                    return
            while job is not None:
                successor = new_owner()
                job = end_and_next(
                    pooled, operation, job, succeeded(job, owner), claim_for=successor
                ).next_job
                owner = successor

    def creating_runner() -> None:  # creates pending jobs from a stale record meanwhile
        with REGISTRY.connection() as pooled:
            while create_next_job(pooled, operation) is not None:
                pass

    def guarded(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in (chaining_runner, creating_runner)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    jobs = bbo.list_jobs(operation)
    assert_disjoint_and_complete(jobs, rows)
    assert {j.status for j in jobs} <= {JobStatus.PENDING, JobStatus.SUCCEEDED}
    assert all(j.lease_owner is None for j in jobs)
    assert bbo.get_operation(operation.id).next_cursor == [rows]


def test_a_retried_end_is_recognised_and_hands_out_nothing_twice(configured: str, conn) -> None:
    make_items(conn, 50)
    operation = enqueue(batch_size=10, sub_batch_size=10, min_batch_size=10, max_batch_size=10)
    owner, successor = new_owner(), new_owner()
    with REGISTRY.connection() as pooled:
        first = create_next_job(pooled, operation, claim_for=owner)
        assert first is not None
        params = succeeded(first, owner)
        chained = end_and_next(pooled, operation, first, params, claim_for=successor)
        with pytest.raises(LeaseLost):  # a first try never takes the row for its own
            end_and_next(pooled, operation, first, params, claim_for=successor)
        again = end_and_next(pooled, operation, first, params, claim_for=successor, retried=True)
    assert again.job.id == first.id and again.next_job is None  # the next one runs already
    assert chained.next_job is not None
    assert len(bbo.list_jobs(operation)) == 2
    assert bbo.get_operation(operation.id).next_cursor == [20]


def test_an_operator_size_is_kept_for_the_next_job(configured: str, conn) -> None:
    make_items(conn, 100)
    operation = enqueue(batch_size=10, sub_batch_size=5, min_batch_size=5)
    owner = new_owner()
    with REGISTRY.connection() as pooled:
        first = create_next_job(pooled, operation, claim_for=owner)
        assert first is not None
        bbo.update(operation.id, batch_size=7)
        chained = end_and_next(pooled, operation, first, succeeded(first, owner), claim_for="x")
    assert chained.next_job is not None
    assert chained.next_job.batch_size == 7
    assert (chained.next_job.min_cursor, chained.next_job.max_cursor) == ([11], [17])


@pytest.mark.parametrize(("old", "new"), [(5, 12), (5, 30), (25, 40), (5, 5)])
def test_a_probe_grown_to_a_larger_size_finds_the_range_a_fresh_probe_finds(
    configured: str, conn: psycopg.Connection[Any], old: int, new: int
) -> None:
    """The optimizer grows the size after the range was probed at the old one: the larger
    range is probed on from the old probe's last row, and must be the same range."""
    from dramatiq_bbo.jobs.instance import build_operation
    from dramatiq_bbo.jobs.range_probe import RangeProbe

    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT g * 3 FROM generate_series(1, 30) AS g")
    operation = bbo.get_operation(enqueue(batch_size=5, sub_batch_size=5).id)
    _, keyset = build_operation(operation)
    with REGISTRY.connection() as pooled:
        for cursor in (None, [15], [84]):  # from the start, mid-range, near the end
            at = dataclasses.replace(operation, next_cursor=cursor)
            probe = RangeProbe(pooled, keyset, at, old)
            grown = probe.grown(pooled, at, new)
            fresh = RangeProbe(pooled, keyset, at, new).bounds()
            if new <= old:
                assert grown is None
                continue
            assert grown is not None and grown.fits(at, new)
            assert grown.bounds() == fresh, (cursor, grown.bounds(), fresh)
        moved = dataclasses.replace(operation, next_cursor=[30])
        assert RangeProbe(pooled, keyset, operation, old).grown(pooled, moved, new) is None
