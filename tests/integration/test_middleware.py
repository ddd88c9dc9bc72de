"""Middleware: registered with ``setup(broker, middleware=[...])``, asked by the stages.

The stages run in the test thread (``pipeline_support``), under a runtime holding the
middleware under test and no broker, so nothing runs behind the test's back. What the gates
do (a ``before_job`` reason holds, a ``between_sub_batches`` reason stops the job at its
checkpoint), that leaving the health middleware out stops the throttling, which hooks
``run_to_completion`` and ``pause``/``resume``/``cancel`` reach, and what ``setup`` refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo import health
from dramatiq_bbo.errors import ConfigurationError, InvalidMiddleware
from dramatiq_bbo.logs import MIDDLEWARE_HOLD
from dramatiq_bbo.metrics import PrometheusMetrics
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.pipeline.broker import default_middleware
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.pipeline.runner import run
from dramatiq_bbo.pipeline.runtime import Runtime, current, installed
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.helpers import wait_until, without_broker
from tests.integration.pipeline_support import dispatched_job_id, drive, no_broker  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_broker")

ROWS, SUB_BATCH = 40, 5


class Visit(bbo.BaseOperation):
    name = "middleware.visit"

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


class Recorder(bbo.Middleware):
    """Records every hook call; its gates answer what the test sets."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.before_job_answer: bool | str | None = None
        self.stop_after: int | None = None  # between_sub_batches calls before "quota"

    def after_enqueue(self, operation: bbo.OperationRecord) -> None:
        self.calls.append(("after_enqueue", operation.id))

    def before_job(self, conn: Any, operation: bbo.OperationRecord) -> bool | str | None:
        self.calls.append(("before_job", operation.id))
        return self.before_job_answer

    def between_sub_batches(self, operation: bbo.OperationRecord, job: Any) -> str | None:
        self.calls.append(("between_sub_batches", job.id))
        gaps = sum(1 for c in self.calls if c[0] == "between_sub_batches")
        return "quota" if self.stop_after is not None and gaps >= self.stop_after else None

    def after_job(self, operation: bbo.OperationRecord, outcome: Any) -> None:
        self.calls.append(("after_job", outcome.job.id, outcome.status, outcome.interrupted_reason))

    def after_transition(self, operation: Any, previous: Any, new: Any) -> None:
        self.calls.append(("after_transition", previous, new))

    def after_hold(self, operation: Any, *, reason: str, indicator: str | None) -> None:
        self.calls.append(("after_hold", operation.id, reason, indicator))

    def hooks(self) -> list[str]:
        return [c[0] for c in self.calls]

    def transitions(self) -> list[tuple[Any, Any]]:
        return [(c[1], c[2]) for c in self.calls if c[0] == "after_transition"]


@pytest.fixture
def items(configured: str, conn: psycopg.Connection[Any]) -> str:
    bbo.configure(dsn=configured, health_hold_seconds=1)
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT generate_series(1, %s)", [ROWS])
    return "items"


@pytest.fixture
def recorder(items: str) -> Iterator[Recorder]:
    middleware = Recorder()
    with installed(Runtime(middleware=(middleware,))):
        yield middleware


def enqueue() -> bbo.OperationRecord:
    return bbo.enqueue(
        Visit,
        "items",
        "id",
        batch_size=ROWS,  # one job, several sub-batches
        sub_batch_size=SUB_BATCH,
        min_batch_size=1,
        max_batch_size=ROWS,
        pause_ms=0,
        interval_seconds=0,
    ).operation


def visits(conn: psycopg.Connection[Any]) -> dict[int, int]:
    return dict(conn.execute("SELECT id, visits FROM items ORDER BY id").fetchall())


# -- the gates ---------------------------------------------------------------------------------
def test_a_before_job_reason_holds_the_operation_with_that_reason_and_starts_nothing(
    recorder: Recorder, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    operation = enqueue()
    recorder.before_job_answer = "maintenance window"
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        assert orchestrate("main", operation.id, None) == Decision.HELD_BY_CHECK

    held = bbo.get_operation(operation.id)
    assert held.status == OperationStatus.QUEUED and bbo.list_jobs(operation) == []
    assert held.hold_reason == "maintenance window" and held.on_hold_until is not None
    events = [getattr(r, "bbo", {}) for r in caplog.records]
    assert any(
        e.get("message") == MIDDLEWARE_HOLD and e["reason"] == "maintenance window" for e in events
    )
    assert orchestrate("main", operation.id, None) == Decision.ON_HOLD  # not asked while held
    assert recorder.hooks().count("before_job") == 1
    holds = [c for c in recorder.calls if c[0] == "after_hold"]
    assert holds == [("after_hold", operation.id, "maintenance window", None)]  # no indicator

    recorder.before_job_answer = None  # once the hold ends, the scheduler hands it back
    wait_until(lambda: str(operation.id) in scheduler.tick("main").dispatched, timeout=15)
    current_op = bbo.get_operation(operation.id)
    assert orchestrate("main", operation.id, current_op.lease_owner) == Decision.DISPATCHED
    assert run("main", operation.id, dispatched_job_id(operation)) is not None
    final, _ = drive(operation.id)
    assert final.status == OperationStatus.FINISHED
    assert final.hold_reason is None and final.on_hold_until is None  # cleared once expired
    assert visits(conn) == {i: 1 for i in range(1, ROWS + 1)}


def test_a_before_job_true_holds_off_without_writing_a_hold(recorder: Recorder) -> None:
    operation = enqueue()
    recorder.before_job_answer = True
    assert orchestrate("main", operation.id, None) == Decision.HELD_BY_CHECK
    after = bbo.get_operation(operation.id)
    assert after.hold_reason is None and after.on_hold_until is None
    assert after.lease_owner is None and bbo.list_jobs(operation) == []
    recorder.before_job_answer = False
    assert orchestrate("main", operation.id, None) == Decision.DISPATCHED


def test_a_between_sub_batches_reason_stops_the_job_at_its_checkpoint_without_an_attempt(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    operation = enqueue()
    recorder.stop_after = 3  # the third gap: three sub-batches committed
    assert orchestrate("main", operation.id, None) == Decision.DISPATCHED
    job_id = dispatched_job_id(operation)
    outcome = run("main", operation.id, job_id)

    assert outcome is not None and outcome.interrupted_reason == "quota"
    [job] = bbo.list_jobs(operation)
    assert job.status == JobStatus.PENDING and job.attempts == 0
    assert job.exception_class is None and job.metrics["interrupted_reason"] == "quota"
    assert job.checkpoint_cursor == [3 * SUB_BATCH] and job.processed_tuple_count == 3 * SUB_BATCH
    assert sum(visits(conn).values()) == 3 * SUB_BATCH
    gaps = [c for c in recorder.calls if c[0] == "between_sub_batches"]
    assert gaps == [("between_sub_batches", job_id)] * 3  # the job it runs between
    assert recorder.calls[-1] == ("after_job", job_id, JobStatus.PENDING, "quota")

    recorder.stop_after = None  # resumed from the checkpoint: every row exactly once
    final, _ = drive(operation.id)
    assert final.status == OperationStatus.FINISHED
    assert visits(conn) == {i: 1 for i in range(1, ROWS + 1)}


def test_without_the_health_middleware_a_stop_indicator_throttles_nothing(
    items: str, conn: psycopg.Connection[Any]
) -> None:
    def says_stop(context: health.Context) -> Any:
        return health.Signal.STOP, "always"

    health.register(says_stop, name="says_stop")
    health.clear_cache()
    try:
        with installed(Runtime(middleware=tuple(bbo.default_middleware()))):
            throttled = enqueue()
            assert orchestrate("main", throttled.id, None) == Decision.HELD_BY_CHECK
            assert bbo.get_operation(throttled.id).hold_reason == "says_stop: always"
        bbo.cancel(throttled.id)
        with installed(Runtime(middleware=())):
            free = enqueue()
            final, outcomes = drive(free.id)
    finally:
        health.unregister("says_stop")
        health.clear_cache()
    assert final.status == OperationStatus.FINISHED and final.hold_reason is None
    assert [o.interrupted_reason for o in outcomes] == [None]
    assert visits(conn) == {i: 1 for i in range(1, ROWS + 1)}


# -- setup -------------------------------------------------------------------------------------
@pytest.fixture
def broker(configured: str) -> Iterator[PostgresBroker]:
    broker = PostgresBroker(url=configured, results=False, middleware=default_middleware())
    try:
        yield broker
    finally:
        broker.close()


def test_setup_installs_the_default_middleware_unless_given_a_list(broker: Any) -> None:
    bbo.setup(broker)
    defaults = [health.HealthMiddleware, PrometheusMetrics]
    assert [type(m) for m in current().middleware] == defaults
    assert current().messenger.broker is broker
    mine = Recorder()
    bbo.setup(broker, middleware=[*bbo.default_middleware(), mine])
    assert [type(m) for m in current().middleware] == [*defaults, Recorder]
    bbo.setup(broker, middleware=[])
    assert current().middleware == ()
    bbo.reset()
    assert current() == Runtime()  # no broker, no middleware


@pytest.mark.parametrize(
    ("item", "hint"),
    [
        (health.HealthMiddleware, "pass an instance, HealthMiddleware(), not the class"),
        (lambda operation: None, "subclass dramatiq_bbo.Middleware"),
        (default_middleware()[0], "dramatiq's own broker middleware goes to the broker"),
    ],
)
def test_setup_refuses_what_is_not_a_middleware_instance_and_changes_nothing(
    broker: Any, item: Any, hint: str
) -> None:
    before = current()
    with pytest.raises(InvalidMiddleware) as raised:
        bbo.setup(broker, middleware=[item])
    assert hint in str(raised.value) and repr(item) in str(raised.value)
    assert isinstance(raised.value, ConfigurationError)
    assert current() is before and broker.actors == {}


# -- notifications -----------------------------------------------------------------------------
def test_run_to_completion_asks_no_gate_but_tells_the_middleware_what_happened(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    recorder.before_job_answer, recorder.stop_after = "never", 1
    operation = enqueue()
    final = bbo.run_to_completion(operation.id)

    assert final.status == OperationStatus.FINISHED
    assert visits(conn) == {i: 1 for i in range(1, ROWS + 1)}
    assert "before_job" not in recorder.hooks() and "between_sub_batches" not in recorder.hooks()
    assert recorder.hooks()[0] == "after_enqueue"
    assert recorder.transitions() == [
        (OperationStatus.QUEUED, OperationStatus.ACTIVE),
        (OperationStatus.ACTIVE, OperationStatus.FINISHED),
    ]
    assert [c[2] for c in recorder.calls if c[0] == "after_job"] == [JobStatus.SUCCEEDED]


def test_pause_resume_and_cancel_are_transitions_the_middleware_sees(recorder: Recorder) -> None:
    operation = enqueue()
    bbo.pause(operation.id)
    bbo.resume(operation.id)
    bbo.cancel(operation.id)
    assert recorder.transitions() == [
        (OperationStatus.QUEUED, OperationStatus.PAUSED),
        (OperationStatus.PAUSED, OperationStatus.QUEUED),
        (OperationStatus.QUEUED, OperationStatus.CANCELLED),
    ]


def test_a_failing_notification_is_logged_and_the_work_goes_on(
    items: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(bbo.Middleware):
        def after_enqueue(self, operation: Any) -> None:
            raise RuntimeError("boom")

        def after_transition(self, operation: Any, previous: Any, new: Any) -> None:
            raise RuntimeError("boom")

    with installed(Runtime(middleware=(Broken(),))), caplog.at_level(logging.ERROR):
        operation = enqueue()
        final, _ = drive(operation.id)
    assert final.status == OperationStatus.FINISHED
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "Broken.after_enqueue failed" in failures
    assert failures.count("Broken.after_transition failed") == 2


def test_without_broker_keeps_the_middleware(recorder: Recorder) -> None:
    with without_broker():
        assert current().middleware == (recorder,) and not current().messenger.ready
