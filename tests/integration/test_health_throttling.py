"""Issue 5 acceptance: a health stop throttles a running operation through the pipeline.

The pipeline's stages run in the test thread (orchestrator → runner, see
``pipeline_support``) with the health middleware installed as ``bbo.setup`` installs it
(its default middleware). A
running operation whose indicator turns to stop executes at most one more sub-batch
(asserted from the job's checkpoint), is held (visible in ``get_operation``), is refused by
the orchestrator while held, and once the hold expires with the signal normal again it is
handed back by the scheduler and finishes with every row processed exactly once. Before a
job, a stop — from a user indicator, or from a real long transaction — dispatches nothing.

Built-in indicators other than the one under test are switched off so that a real but
unrelated server state (an autoanalyze of the new table...) cannot hold these operations.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import health
from dramatiq_bbo.logs import HEALTH_HOLD, HEALTH_SIGNAL
from dramatiq_bbo.pipeline import runtime, scheduler
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.pipeline.runner import run
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.helpers import wait_until
from tests.integration.pipeline_support import dispatched_job_id, drive, no_broker  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_broker")

ROWS, SUB_BATCH = 60, 5
INDICATOR = "app_pressure"

#: what the application's indicator answers; the operation counts its sub-batches
STATE: dict[str, Any] = {"signal": health.Signal.NORMAL, "stop_after": None, "sub_batches": 0}


class Visit(bbo.BaseOperation):
    """Visits each row once; after ``stop_after`` sub-batches the app's indicator says stop."""

    name = "health_throttling.visit"

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            STATE["sub_batches"] += 1
            if STATE["sub_batches"] == STATE["stop_after"]:
                STATE["signal"] = health.Signal.STOP


def app_pressure(context: health.Context) -> Any:
    if STATE["signal"] is health.Signal.STOP:
        return health.Signal.STOP, "queue latency above 2s"
    return health.Signal.NORMAL


@pytest.fixture
def pipeline(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Callable[..., Any]]:
    """``pipeline(**health)``: bbo on the test database with a 1 s hold, the default
    middleware (health) installed, the app's indicator registered, and ``items`` to visit;
    the operation."""
    STATE.update(signal=health.Signal.NORMAL, stop_after=None, sub_batches=0)
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT generate_series(1, %s)", [ROWS])
    health.register(app_pressure, name=INDICATOR)
    defaults = runtime.installed(runtime.Runtime(middleware=tuple(bbo.default_middleware())))

    def make(**thresholds: Any) -> Any:
        thresholds.setdefault("disabled_indicators", list(health.BUILTIN_INDICATORS))
        bbo.configure(dsn=dsn, health_hold_seconds=1, health=thresholds)
        health.clear_cache()
        return bbo.enqueue(
            Visit,
            "items",
            "id",
            batch_size=ROWS,  # one job: every sub-batch is the runner's to check
            sub_batch_size=SUB_BATCH,
            min_batch_size=1,
            max_batch_size=ROWS,
            pause_ms=0,
            interval_seconds=0,
        ).operation

    with defaults:
        yield make
    health.unregister(INDICATOR)
    health.clear_cache()
    bbo.reset()


def visits(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return dict(conn.execute("SELECT id, visits FROM items ORDER BY id").fetchall())


def db_now(conn: psycopg.Connection[Any]) -> datetime.datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def handed_back_after_the_hold(operation_id: Any) -> Any:
    """Scheduler ticks until it hands the operation to the orchestrator again (the hold
    expired), then the orchestrator message it would send; the decision."""

    def tick() -> bool:
        return str(operation_id) in scheduler.tick("main").dispatched

    wait_until(tick, timeout=15)
    return orchestrate("main", operation_id, bbo.get_operation(operation_id).lease_owner)


def test_a_stop_between_sub_batches_ends_the_job_at_its_checkpoint_holds_and_resumes(
    pipeline: Callable[..., Any], conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    operation = pipeline()
    k = 3
    STATE["stop_after"] = k
    assert orchestrate("main", operation.id, None) == Decision.DISPATCHED
    job_id = dispatched_job_id(operation)
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        outcome = run("main", operation.id, job_id)

    # the stop took effect before the next sub-batch: at most one more ran (here none)
    assert outcome is not None and outcome.interrupted_reason == "health_stop"
    [job] = bbo.list_jobs(operation)
    assert job.status == JobStatus.PENDING  # given back, not a failed attempt
    assert job.attempts == 0 and job.exception_class is None
    assert job.metrics["interrupted_reason"] == "health_stop"
    done = job.processed_tuple_count // SUB_BATCH
    assert k <= done <= k + 1
    assert job.checkpoint_cursor == [done * SUB_BATCH]
    assert STATE["sub_batches"] == done
    assert sum(visits(conn).values()) == done * SUB_BATCH

    # held, with the indicator and its reason, for health_hold_seconds
    held = bbo.get_operation(operation.id)
    assert held.hold_reason == f"{INDICATOR}: queue latency above 2s"
    assert held.on_hold_until is not None and held.on_hold_until > db_now(conn)
    assert held.on_hold_until - db_now(conn) <= datetime.timedelta(seconds=1)
    events = [getattr(r, "bbo", {}) for r in caplog.records]
    assert {"message": HEALTH_SIGNAL, "indicator": INDICATOR, "signal": "stop"}.items() <= next(
        e for e in events if e.get("message") == HEALTH_SIGNAL
    ).items()
    assert any(e.get("message") == HEALTH_HOLD and e["indicator"] == INDICATOR for e in events)

    # the runner chained an orchestrator message; it refuses the held operation
    assert orchestrate("main", operation.id, held.lease_owner) == Decision.ON_HOLD

    # the signal is normal again: once the hold expires the scheduler hands it back
    STATE["signal"] = health.Signal.NORMAL
    assert handed_back_after_the_hold(operation.id) == Decision.DISPATCHED
    resumed = bbo.get_operation(operation.id)
    assert resumed.on_hold_until is None and resumed.hold_reason is None  # hold cleared
    outcome = run("main", operation.id, dispatched_job_id(resumed))
    assert outcome is not None and outcome.status == JobStatus.SUCCEEDED

    final, _ = drive(operation.id)
    assert final.status == OperationStatus.FINISHED
    assert final.processed_tuple_count == ROWS
    assert visits(conn) == {i: 1 for i in range(1, ROWS + 1)}  # every row exactly once
    [job] = bbo.list_jobs(final)
    assert job.status == JobStatus.SUCCEEDED and job.processed_tuple_count == ROWS


def test_a_stop_before_a_job_dispatches_nothing_and_holds_the_operation(
    pipeline: Callable[..., Any], conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    operation = pipeline()
    STATE["signal"] = health.Signal.STOP
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        assert orchestrate("main", operation.id, None) == Decision.HELD_BY_CHECK

    assert bbo.list_jobs(operation) == []
    held = bbo.get_operation(operation.id)
    assert held.status == OperationStatus.QUEUED  # a hold is not a status
    assert held.hold_reason == f"{INDICATOR}: queue latency above 2s"
    assert held.on_hold_until is not None and held.on_hold_until > db_now(conn)
    assert held.lease_owner is None  # nothing in flight
    assert scheduler.tick("main").dispatched == []  # skipped while held
    assert orchestrate("main", operation.id, None) == Decision.ON_HOLD
    signals = [getattr(r, "bbo", {}) for r in caplog.records]
    assert any(s.get("message") == HEALTH_SIGNAL and s["indicator"] == INDICATOR for s in signals)

    STATE["signal"] = health.Signal.NORMAL
    assert handed_back_after_the_hold(operation.id) == Decision.DISPATCHED
    outcome = run("main", operation.id, dispatched_job_id(operation))
    assert outcome is not None and outcome.status == JobStatus.SUCCEEDED
    final, _ = drive(operation.id)
    assert final.status == OperationStatus.FINISHED and final.hold_reason is None
    assert visits(conn) == {i: 1 for i in range(1, ROWS + 1)}


def test_a_stop_that_lasts_past_the_hold_holds_the_operation_again(
    pipeline: Callable[..., Any], conn: psycopg.Connection[Any]
) -> None:
    operation = pipeline()
    STATE["signal"] = health.Signal.STOP
    assert orchestrate("main", operation.id, None) == Decision.HELD_BY_CHECK
    first = bbo.get_operation(operation.id).on_hold_until
    assert handed_back_after_the_hold(operation.id) == Decision.HELD_BY_CHECK
    again = bbo.get_operation(operation.id)
    assert first is not None and again.on_hold_until is not None
    assert again.on_hold_until > first and again.hold_reason is not None
    assert bbo.list_jobs(operation) == []


def test_a_real_long_transaction_holds_the_operation_before_its_first_job(
    pipeline: Callable[..., Any], dsn: str
) -> None:
    others = [n for n in health.BUILTIN_INDICATORS if n != "long_transaction"]
    operation = pipeline(
        disabled_indicators=others,
        max_transaction_age_seconds=1,
        cache_seconds={"long_transaction": 0},
    )
    with psycopg.connect(dsn) as other:
        other.execute("SELECT txid_current()")
        wait_until(lambda: health.evaluate(operation).stop, timeout=15)
        assert orchestrate("main", operation.id, None) == Decision.HELD_BY_CHECK
        held = bbo.get_operation(operation.id)
        assert held.hold_reason is not None
        assert held.hold_reason.startswith(f"long_transaction: session {other.info.backend_pid}")
        assert bbo.list_jobs(operation) == []
        other.commit()
    assert handed_back_after_the_hold(operation.id) == Decision.DISPATCHED


def test_a_held_operation_gets_an_orchestrator_message_due_when_the_hold_ends(
    pipeline: Callable[..., Any], conn: psycopg.Connection[Any], dsn: str
) -> None:
    """With a broker set up, a hold does not wait for the scheduler's next tick (up to a
    minute after the hold): the orchestrator writes its own next message, delayed to the end
    of the hold, under a lease that keeps the scheduler off meanwhile."""
    from dramatiq_pg import PostgresBroker

    from dramatiq_bbo.pipeline.broker import default_middleware

    operation = pipeline()
    broker = PostgresBroker(url=dsn, results=False, middleware=default_middleware())
    # the pipeline fixture puts its runtime back afterwards
    runtime.install(dataclasses.replace(runtime.current(), messenger=runtime.Messenger(broker)))
    try:
        STATE["signal"] = health.Signal.STOP
        assert orchestrate("main", operation.id, None) == Decision.HELD_BY_CHECK
        held = bbo.get_operation(operation.id)
        assert held.on_hold_until is not None and held.lease_owner is not None
        rows = conn.execute(
            "SELECT queue_name, message FROM dramatiq.queue"
            " WHERE message->>'actor_name' = 'bbo_orchestrator'"
        ).fetchall()
        assert len(rows) == 1
        queue_name, message = rows[0]
        assert queue_name == "background_operations.DQ"  # dramatiq-pg's delay queue
        assert message["args"] == ["main", str(operation.id), held.lease_owner]
        eta = datetime.datetime.fromtimestamp(message["options"]["eta"] / 1000, datetime.UTC)
        assert abs((eta - held.on_hold_until).total_seconds()) < 0.5
        assert scheduler.tick("main").dispatched == []  # the lease keeps it off
    finally:
        broker.close()
