"""Capacity refilled at once, in the one dispatch order, and one hop from enqueue to work.

The pipeline is set up on the test database's broker but no worker runs: the test reads the
messages the stages wrote (``dramatiq.queue``) and delivers them itself, in the test thread,
exactly as a worker's ``bbo_orchestrator``/``bbo_runner`` actors would. ``max_running_jobs``
is 1, so every freed slot has exactly one taker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo.pipeline import runner
from dramatiq_bbo.pipeline.broker import default_middleware
from dramatiq_bbo.pipeline.messages import ORCHESTRATOR, RUNNER
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.state.records import OperationStatus
from tests.integration.enqueue_support import define_operation
from tests.integration.pipeline_support import visits

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

ROWS = 30
SIZES = dict.fromkeys(("batch_size", "sub_batch_size", "min_batch_size", "max_batch_size"), 10)


@pytest.fixture
def broker(configured: str) -> Iterator[PostgresBroker]:
    bbo.configure(dsn=configured, max_running_jobs=1)
    instance = PostgresBroker(url=configured, results=False, middleware=default_middleware())
    bbo.setup(instance)  # the conftest restores the process-wide hooks afterwards
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def visit(
    broker: PostgresBroker,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],  # noqa: F811
) -> Callable[..., Any]:
    """``visit(**enqueue_options)``: enqueue an operation adding 1 to ``visits`` of its own
    table's 30 rows (3 jobs of one sub-batch); its record."""
    made = 0

    def perform(self: Any) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)

    def enqueue(**options: Any) -> Any:
        nonlocal made
        made += 1
        table = f"rows_{made}"
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, visits int DEFAULT 0)")
        conn.execute(f"INSERT INTO {table} (id) SELECT generate_series(1, {ROWS})")
        cls = define_operation(perform=perform, pause_ms=0, interval_seconds=0)
        return bbo.enqueue(cls, table, "id", **SIZES, **options).operation

    return enqueue


def messages(conn: psycopg.Connection[Any]) -> list[tuple[str, list[Any]]]:
    rows = conn.execute(
        "SELECT message->>'actor_name', message->'args' FROM dramatiq.queue"
        " WHERE state = 'queued' ORDER BY mtime, message_id"
    ).fetchall()
    return [(name, args) for name, args in rows]


def deliver_one(conn: psycopg.Connection[Any]) -> tuple[str, list[Any]] | None:
    """Take the oldest queued message and run its actor here, as a worker would."""
    row = conn.execute(
        "DELETE FROM dramatiq.queue WHERE message_id = (SELECT message_id FROM dramatiq.queue"
        " WHERE state = 'queued' ORDER BY mtime, message_id LIMIT 1)"
        " RETURNING message->>'actor_name', message->'args'"
    ).fetchone()
    if row is None:
        return None
    name, args = row
    if name == ORCHESTRATOR:
        orchestrate(*args)
    elif name == RUNNER:
        runner.run(*args)
    return name, args


def deliver_all(conn: psycopg.Connection[Any], limit: int = 100) -> None:
    for _ in range(limit):
        if deliver_one(conn) is None:
            return
    raise AssertionError("the pipeline never went quiet")


def runner_message(operation: Any, *, gate: bool = False) -> tuple[str, list[Any]]:
    """The runner message the operation's dispatched job waits for; ``gate``: dispatched by
    an enqueue, the worker asks its middleware's ``before_job`` first."""
    record = bbo.get_operation(operation.id)
    [job] = [job for job in bbo.list_jobs(operation.id) if job.status == 0]
    args = ["main", str(record.id), str(job.id), record.lease_owner]
    return RUNNER, args + [True] if gate else args


def job_starts(conn: psycopg.Connection[Any]) -> list[int]:
    """The operations whose jobs started, in the order they started."""
    rows = conn.execute(
        "SELECT worker_id FROM bbo.background_operation_jobs_cell_local"
        " WHERE started_at IS NOT NULL ORDER BY started_at"
    ).fetchall()
    return [int(row[0]) for row in rows]


def test_enqueue_with_a_free_slot_writes_the_runner_message_itself(
    conn: psycopg.Connection[Any], visit: Callable[..., Any]
) -> None:
    operation = visit()
    assert bbo.get_operation(operation.id).status == OperationStatus.ACTIVE  # started in enqueue
    # one hop: the first job dispatched, its runner message under the stage lease
    assert messages(conn) == [runner_message(operation, gate=True)]
    deliver_all(conn)
    assert bbo.get_operation(operation.id).status == OperationStatus.FINISHED
    assert visits(conn, 1) == [(1, ROWS)]  # exactly once


def test_a_freed_slot_goes_to_the_waiting_operation_when_the_job_ends(
    conn: psycopg.Connection[Any], visit: Callable[..., Any]
) -> None:
    first, second = visit(), visit()
    # no slot for the second: it waits in the pool, no message, no lease
    assert [name for name, _ in messages(conn)] == [RUNNER]
    assert bbo.get_operation(second.id).lease_owner is None
    deliver_one(conn)  # the first's job runs and ends: no scheduler pass in between
    assert messages(conn) == [runner_message(second)]  # its job dispatched with the job's end
    assert bbo.get_operation(first.id).lease_owner is None  # back to the pool, behind it
    deliver_all(conn)
    assert job_starts(conn) == [first.id, second.id] * 3  # one job each, in turn
    assert visits(conn, 1) == visits(conn, 2) == [(1, ROWS)]


def test_an_operation_alone_goes_on_in_the_same_runner_call(
    conn: psycopg.Connection[Any], visit: Callable[..., Any]
) -> None:
    operation = visit()
    deliver_one(conn)  # one runner message: all three jobs, nothing else waiting
    assert messages(conn) == []
    assert bbo.get_operation(operation.id).status == OperationStatus.FINISHED
    assert len(bbo.list_jobs(operation.id)) == 3
    assert visits(conn, 1) == [(1, ROWS)]


def test_a_new_operation_does_not_jump_ahead_of_one_waiting(
    conn: psycopg.Connection[Any], visit: Callable[..., Any]
) -> None:
    first, waiting = visit(), visit()
    # the first's dispatched job dies with its runner: a free slot, one operation waiting
    conn.execute(
        "UPDATE bbo.background_operation_jobs_cell_local SET lease_expires_at = now()"
        " WHERE worker_id = %s",
        [first.id],
    )
    late = visit()
    assert bbo.get_operation(late.id).status == OperationStatus.QUEUED
    assert bbo.list_jobs(late.id) == []
    assert bbo.get_operation(late.id).lease_owner is None  # in the pool, behind it
    assert runner_message(waiting, gate=True) in messages(conn)  # by the enqueue


def test_a_wake_up_in_the_callers_transaction_yields_to_one_waiting(
    configured: str, conn: psycopg.Connection[Any], visit: Callable[..., Any]
) -> None:
    first, waiting = visit(), visit()
    with psycopg.connect(configured) as caller:  # the caller's transaction: a wake-up message
        late = visit(connection=caller)
        caller.commit()
    token = bbo.get_operation(late.id).lease_owner
    assert (ORCHESTRATOR, ["main", str(late.id), token, True]) in messages(conn)
    conn.execute(  # a free slot, as above
        "UPDATE bbo.background_operation_jobs_cell_local SET lease_expires_at = now()"
        " WHERE worker_id = %s",
        [first.id],
    )
    assert orchestrate("main", late.id, token, True) == Decision.YIELDED
    assert bbo.get_operation(late.id).lease_owner is None
    assert bbo.list_jobs(late.id) == []
    assert runner_message(waiting) in messages(conn)


class Objecting(bbo.Middleware):
    def before_job(self, conn: psycopg.Connection[Any], operation: Any) -> str:
        return "not now"


def test_the_worker_asks_before_job_before_running_a_job_an_enqueue_dispatched(
    broker: PostgresBroker, conn: psycopg.Connection[Any], visit: Callable[..., Any]
) -> None:
    bbo.setup(broker, middleware=[Objecting()])
    operation = visit()
    assert [name for name, _ in messages(conn)] == [RUNNER]  # enqueue does not ask it
    deliver_one(conn)  # the worker does
    held = bbo.get_operation(operation.id)
    assert held.hold_reason == "not now"
    [job] = bbo.list_jobs(operation.id)
    assert (job.status, job.attempts, job.lease_owner) == (0, 0, None)  # given back untouched
    assert messages(conn) == [(ORCHESTRATOR, ["main", str(held.id), held.lease_owner])]
    assert visits(conn, 1) == [(0, ROWS)]
