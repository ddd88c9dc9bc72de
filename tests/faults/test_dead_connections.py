"""Connections terminated under each stage: the next use replaces them and the work goes on.

``pg_terminate_backend`` (what a DBA, a pooler or a failover does to a session) is aimed
only at this test's own connections, on its own database: the sub-batch connection of the
running thread (idle between two jobs, and in the middle of a sub-batch), the pooled
bookkeeping connections, the connection reflection reads the catalog on, and the ones the
scheduler tick, the orchestrator and a health indicator use. Each time the next use works,
no attempt is spent, and the operation ends with every row visited exactly once.

And a wrong DSN fails fast: a checkout or a connect gives up within
``connect_timeout_seconds`` with libpq's reason, never the password.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import peewee
import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import db
from dramatiq_bbo.contrib.models import database_for
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.errors import ConnectionFailed, LeaseLost
from dramatiq_bbo.health.base import Signal
from dramatiq_bbo.health.evaluator import clear_cache, evaluate
from dramatiq_bbo.jobs import claims
from dramatiq_bbo.jobs.run import create_next_job, end_and_next
from dramatiq_bbo.pipeline import orchestrator, scheduler
from dramatiq_bbo.reconnect import is_broken, is_connection_error
from dramatiq_bbo.state.records import JobStatus, OperationRecord, OperationStatus
from dramatiq_bbo.testing.programs import free_port
from dramatiq_bbo.walk import tables

pytestmark = pytest.mark.timeout(120)

ROWS = 2_000
JOBS = "bbo.background_operation_jobs_cell_local"

#: (operation id, job ordinal or sub-batch ordinal) already terminated: each fault fires once
_fired: set[tuple[Any, ...]] = set()


def terminate(pid: int) -> None:
    """End one backend of ours and wait until it is gone (as a DBA would)."""
    with psycopg.connect(REGISTRY.get().dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def terminate_all_ours(keep: psycopg.Connection[Any] | None = None) -> int:
    """End every session on this test's private database (all of them ours) but ``keep``."""
    with psycopg.connect(REGISTRY.get().dsn, autocommit=True) as admin:
        pids = [
            pid
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND pid <> %s",
                [keep.info.backend_pid if keep is not None else 0],
            ).fetchall()
        ]
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    return len(pids)


def thread_connection_pid() -> int:
    """The backend of this thread's peewee connection (the one sub-batches run on)."""
    return int(database_for("main").connection().info.backend_pid)


class Visit(bbo.BaseOperation):
    """``visits + 1`` on every row. ``arguments["kill"]``: terminate this thread's own
    connection once, ``"before_job"`` at the start of the operation's second job (idle, as
    between two jobs) or ``"mid_sub_batch"`` after the update of the job's third sub-batch,
    before its checkpoint and COMMIT."""

    name = "faults.dead_connections.visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        kill = (self.arguments or {}).get("kill")
        ordinal = (self.operation.id, "job", *self.job.min_cursor)
        if kill == "before_job" and self.job.min_cursor != [1] and ordinal not in _fired:
            _fired.add(ordinal)
            terminate(thread_connection_pid())
        for number, sub_batch in enumerate(self.each_sub_batch(), start=1):
            sub_batch.update(visits=self.table.visits + 1)
            key = (self.operation.id, self.job.id, number)
            if kill == "mid_sub_batch" and number == 3 and key not in _fired:
                _fired.add(key)
                terminate(thread_connection_pid())


@pytest.fixture
def items(configured: str, conn: psycopg.Connection[Any]) -> Iterator[str]:
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT g FROM generate_series(1, %s) AS g", [ROWS])
    tables.forget()
    yield "items"
    _fired.clear()


def enqueue(**arguments: Any) -> OperationRecord:
    return bbo.enqueue(
        Visit, "items", "id", arguments=arguments, batch_size=1_000, sub_batch_size=100
    ).operation


def assert_every_row_visited_once(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT visits, count(*) FROM items GROUP BY 1").fetchall() == [(1, ROWS)]


def job_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT status, attempts, (metrics->>'runs')::int, exception_class FROM {JOBS} ORDER BY id"
    ).fetchall()


def test_run_to_completion_finishes_after_its_threads_connection_was_terminated(
    items: str, conn: psycopg.Connection[Any]
) -> None:
    operation = enqueue()
    terminate(thread_connection_pid())

    ended = bbo.run_to_completion(operation.id)

    assert ended.status == OperationStatus.FINISHED
    assert_every_row_visited_once(conn)
    assert job_rows(conn) == [(JobStatus.SUCCEEDED, 1, 1, None)] * 2


def test_a_sub_batch_connection_terminated_between_two_jobs_is_replaced_before_the_next(
    items: str, conn: psycopg.Connection[Any]
) -> None:
    operation = enqueue(kill="before_job")

    ended = bbo.run_to_completion(operation.id)

    assert ended.status == OperationStatus.FINISHED
    assert len(_fired) == 1
    assert_every_row_visited_once(conn)
    # the dead connection was found and replaced as the sub-batch began: no run was lost
    assert job_rows(conn) == [(JobStatus.SUCCEEDED, 1, 1, None)] * 2


def test_a_connection_lost_mid_sub_batch_interrupts_the_job_without_spending_an_attempt(
    items: str, conn: psycopg.Connection[Any]
) -> None:
    operation = enqueue(kill="mid_sub_batch")

    ended = bbo.run_to_completion(operation.id)

    assert ended.status == OperationStatus.FINISHED
    assert len(_fired) == 2  # the third sub-batch of each job
    # the lost sub-batches rolled back and were done again from their job's checkpoint
    assert_every_row_visited_once(conn)
    # each job ran twice (interrupted, then resumed) on one attempt
    assert job_rows(conn) == [(JobStatus.SUCCEEDED, 1, 2, None)] * 2


def test_pooled_bookkeeping_connections_terminated_while_idle_are_never_lent_again(
    items: str, conn: psycopg.Connection[Any]
) -> None:
    operation = enqueue()
    with REGISTRY.connection() as first, REGISTRY.connection() as second:
        pids = {first.info.backend_pid, second.info.backend_pid}
    assert terminate_all_ours(conn) >= len(pids)

    with REGISTRY.connection() as again:
        assert again.execute("SELECT 1").fetchone() == (1,)
        assert again.info.backend_pid not in pids
    assert bbo.run_to_completion(operation.id).status == OperationStatus.FINISHED
    assert_every_row_visited_once(conn)


def test_reflection_replaces_a_terminated_connection(items: str) -> None:
    terminate(thread_connection_pid())

    model = tables.table_model("main", "items")

    assert {"id", "visits"} <= set(model._meta.columns)  # type: ignore[attr-defined]


def test_the_scheduler_tick_and_the_orchestrator_work_after_their_connections_died(
    items: str, conn: psycopg.Connection[Any]
) -> None:
    ticked, orchestrated = enqueue(), bbo.enqueue(Visit, "items", "id", batch_size=500).operation
    thread_connection_pid()  # reflection and sub-batches have a connection to lose too
    terminate_all_ours(conn)
    report = scheduler.tick("main")
    assert str(ticked.id) in report.dispatched

    # the orchestrator's own message: it holds no lease yet
    conn.execute(
        "UPDATE bbo.background_operation_workers_cell_local"
        " SET lease_owner = NULL, lease_expires_at = NULL WHERE id = %s",
        [orchestrated.id],
    )
    terminate_all_ours(conn)
    decision = orchestrator.orchestrate("main", orchestrated.id, None)
    assert decision == orchestrator.Decision.DISPATCHED

    terminate_all_ours(conn)
    assert bbo.run_to_completion(orchestrated.id).status == OperationStatus.FINISHED
    assert_every_row_visited_once(conn)


def test_a_health_indicator_gets_a_working_connection_after_the_pools_died(
    items: str,
) -> None:
    operation = enqueue()
    clear_cache()
    assert evaluate(operation, indicators=["long_transaction"]).results[0].signal is Signal.NORMAL
    terminate_all_ours()
    clear_cache()

    result = evaluate(operation, indicators=["long_transaction"]).results[0]

    assert result.signal is Signal.NORMAL, result.reason


# -- a wrong DSN fails fast, with its cause ---------------------------------------------------
@pytest.fixture
def unreachable() -> Iterator[str]:
    """A DSN whose port nobody listens on (its password must never show in an error)."""
    yield f"host=127.0.0.1 port={free_port()} dbname=nowhere user=someone password=hush-hush"
    bbo.reset()


def test_enqueue_against_an_unreachable_port_fails_within_the_connect_timeout_with_the_cause(
    unreachable: str,
) -> None:
    bbo.configure(dsn=unreachable)  # connect_timeout_seconds: 5 by default
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as raised:
        bbo.enqueue(Visit, "items", "id")
    elapsed = time.monotonic() - started

    assert elapsed < 5 + 3, f"took {elapsed:.1f}s"
    message = str(raised.value)
    assert "connection refused" in message.lower(), message
    assert "port=" in message and "hush-hush" not in message


def test_the_connect_timeout_setting_bounds_a_checkout_and_a_direct_connect(
    unreachable: str,
) -> None:
    bbo.configure(dsn=unreachable, connect_timeout_seconds=1.5)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="(?i)connection refused"), REGISTRY.connection():
        pass
    assert time.monotonic() - started < 1.5 + 3
    with pytest.raises(ConnectionFailed, match="(?i)connection refused") as raised:
        db.connect(unreachable)
    assert "hush-hush" not in str(raised.value)


def test_pool_size_is_a_setting(configured: str) -> None:
    bbo.configure(dsn=configured, pool_max_size=3)
    assert REGISTRY.pool().max_size == 3


def test_only_a_lost_connection_counts_as_one_never_a_timeout(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    errors: list[BaseException] = []
    with psycopg.connect(configured, autocommit=True) as victim:
        victim.execute("SET statement_timeout = '50ms'")
        with pytest.raises(psycopg.errors.QueryCanceled) as timed_out:
            victim.execute("SELECT pg_sleep(2)")
        errors.append(timed_out.value)
        victim.execute("SET statement_timeout = 0")
        victim.execute("SET lock_timeout = '50ms'")
        conn.execute("CREATE TABLE locked (id int)")
        with conn.transaction():
            conn.execute("LOCK TABLE locked")
            with pytest.raises(psycopg.errors.LockNotAvailable) as lock_timeout:
                victim.execute("SELECT * FROM locked")
        errors.append(lock_timeout.value)
        assert not any(is_connection_error(error) for error in errors)
        assert not is_broken(victim)

        conn.execute("SELECT pg_terminate_backend(%s, 5000)", [victim.info.backend_pid])
        with pytest.raises(psycopg.OperationalError) as lost:
            victim.execute("SELECT 1")
        assert is_connection_error(lost.value) and is_broken(victim)
        # peewee re-raises psycopg's errors as its own, keeping the original
        assert is_connection_error(peewee.OperationalError(lost.value))
        with pytest.raises(psycopg.OperationalError) as again:
            victim.execute("SELECT 1")
        assert is_connection_error(again.value)


def test_a_step_gives_up_after_reconnect_seconds_and_raises_the_connection_error(
    unreachable: str,
) -> None:
    bbo.configure(dsn=unreachable, connect_timeout_seconds=1, reconnect_seconds=1)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="(?i)connection refused"):
        bbo.run_to_completion(1)
    # tries of up to connect_timeout_seconds each, for reconnect_seconds, then the last one
    assert time.monotonic() - started < 1 + 1 + 1 + 3


def test_a_claim_or_an_end_of_job_tried_again_after_a_lost_answer_recognises_its_own_write(
    items: str, conn: psycopg.Connection[Any]
) -> None:
    """When the connection dies after the server committed but before the answer came back,
    the step is tried again: it must find its own write, not refuse its own job."""
    operation = enqueue()
    with REGISTRY.connection() as bookkeeping_conn:
        job = create_next_job(bookkeeping_conn, operation)
        assert job is not None
        first = claims.claim(bookkeeping_conn, "main", operation.id, job.id, "runner-1")
        again = claims.claim(bookkeeping_conn, "main", operation.id, job.id, "runner-1")
        assert again[2].id == first[2].id and again[2].attempts == first[2].attempts == 1
        with pytest.raises(bbo.errors.InvalidTransition, match="live lease"):
            claims.claim(bookkeeping_conn, "main", operation.id, job.id, "runner-2")

    params = {
        "status": int(JobStatus.PENDING),
        "refund": 1,
        "interruption": 1,
        "exception_class": None,
        "exception_message": None,
        "metrics": json.dumps({"runs": 1, "interrupted_reason": "connection_lost"}),
        "partition": job.partition,
        "id": job.id,
        "lease_owner": "runner-1",
    }
    with REGISTRY.connection() as bookkeeping_conn:
        written = end_and_next(bookkeeping_conn, operation, job, params, create_next=False).job
        assert written.attempts == 0
        again = end_and_next(
            bookkeeping_conn, operation, job, params, create_next=False, retried=True
        ).job
        assert again == written  # its own write
        other = {**params, "metrics": json.dumps({"runs": 2})}
        with pytest.raises(LeaseLost):  # not another run's
            end_and_next(bookkeeping_conn, operation, job, other, create_next=False, retried=True)
