"""Cron operations — ``bbo.schedule(...)`` declares a periodiq actor per schedule on
the application's broker; firing it enqueues a cell-local operation, once per cron slot even
when two periodiq processes fire it; mistakes fail at declaration; Sundays fire.

The broker is dramatiq-pg's ``PostgresBroker`` on the test's database (``setup`` refuses any
other); its pool opens nothing until a message is consumed. Firing goes through the actor's
own function, and once through a real dramatiq ``Worker`` consuming that broker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pendulum
import periodiq
import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo.errors import (
    ColumnNotInCursor,
    InvalidArguments,
    InvalidCronExpression,
    InvalidScope,
    OperationDefinitionError,
    UnknownOperationClass,
    ValidationError,
)
from dramatiq_bbo.logs import DUPLICATE_ENQUEUE, WORKER_TRANSITION
from dramatiq_bbo.operation import unregister
from dramatiq_bbo.pipeline import messages, runner
from dramatiq_bbo.pipeline import schedules as cron_operations
from dramatiq_bbo.pipeline.broker import default_middleware
from dramatiq_bbo.pipeline.runtime import current, install
from dramatiq_bbo.state.records import OperationStatus
from tests.helpers import wait_until
from tests.integration.pipeline_support import drive

SATURDAY_3AM = pendulum.datetime(2024, 1, 6, 3, 0, tz="UTC")
SUNDAY_3AM = pendulum.datetime(2024, 1, 7, 3, 0, tz="UTC")


@pytest.fixture
def pipeline_state() -> Iterator[None]:
    """Leave the process as it was: the runtime ``setup`` installs, schedules, setup's
    broker, the runner's shutdown flag."""
    saved = (
        current(),
        dict(cron_operations._schedules),
        cron_operations._target,
    )
    cron_operations._schedules.clear()
    cron_operations._target = None
    try:
        yield
    finally:
        previous, schedules, cron_operations._target = saved
        install(previous)
        cron_operations._schedules.clear()
        cron_operations._schedules.update(schedules)
        runner.shutting_down.clear()  # set by a dramatiq Worker's stop (WorkerShutdown)


@pytest.fixture
def broker(pipeline_state: None, dsn: str) -> Iterator[PostgresBroker]:
    # dramatiq's Prometheus middleware only works in a process booted by the dramatiq CLI
    broker = PostgresBroker(url=dsn, results=False, middleware=default_middleware())
    yield broker
    broker.close()


@pytest.fixture
def purge() -> Iterator[type[bbo.BaseOperation]]:
    """An operation class deleting the rows of ``emails`` not confirmed."""

    def perform(self: Any) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.where(self.table.confirmed == False).delete()  # noqa: E712

    name = f"cron_purge_{uuid.uuid4().hex[:8]}"
    attributes = {"name": name, "perform": perform, "pause_ms": 0, "cursor": ("id",)}
    cls = type(name, (bbo.BaseOperation,), attributes)
    yield cls
    unregister(name)


@pytest.fixture
def emails(configured: str, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("CREATE TABLE emails (id bigint PRIMARY KEY, confirmed boolean NOT NULL)")
    conn.execute("INSERT INTO emails SELECT g, g % 3 = 0 FROM generate_series(1, 300) AS g")
    conn.execute("ANALYZE emails")
    return conn


def operations(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, job_class_name, table_schema || '.' || table_name, status"
        " FROM bbo.background_operation_workers_cell_local ORDER BY id"
    ).fetchall()


def actor_of(broker: dramatiq.Broker, declared: cron_operations.CronOperation) -> Any:
    return broker.get_actor(declared.actor_name)


# -- declaration -----------------------------------------------------------------------------
def test_setup_declares_one_periodic_actor_per_schedule_on_the_pipeline_queue(
    broker: PostgresBroker, purge: type[bbo.BaseOperation]
) -> None:
    hourly = bbo.schedule(purge, "emails", "id", cron="0 * * * *", batch_size=500)
    nightly = bbo.schedule(
        purge, "emails", "id", cron="30 2 * * *", arguments={"keep": 1}, name="nightly_purge"
    )

    actors = bbo.setup(broker, queue_name="bbo_test_queue")

    assert hourly.actor_name == f"bbo_cron:{purge.name}:emails:id"
    for declared, spec in ((hourly, "0 * * * *"), (nightly, "30 2 * * *")):
        actor = actor_of(broker, declared)
        assert actors[declared.actor_name] is actor
        assert actor.queue_name == "bbo_test_queue"
        assert actor.options["periodic"] == periodiq.cron(spec)
        assert actor.options["max_retries"] == 0
    assert bbo.setup(broker)[hourly.actor_name] is actor_of(broker, hourly)  # idempotent


def test_a_schedule_declared_after_setup_is_declared_on_its_broker_at_once(
    broker: PostgresBroker, purge: type[bbo.BaseOperation]
) -> None:
    bbo.setup(broker)
    declared = bbo.schedule(purge, "emails", "id", cron="@daily")

    actor = actor_of(broker, declared)
    assert actor.queue_name == "background_operations"
    assert actor.options["periodic"] == periodiq.cron("0 0 * * *")


def test_declaring_the_same_schedule_twice_keeps_one_and_a_clash_needs_a_name(
    broker: PostgresBroker, purge: type[bbo.BaseOperation]
) -> None:
    first = bbo.schedule(purge, "emails", "id", cron="0 * * * *")
    assert bbo.schedule(purge, "emails", "id", cron="0 * * * *") is first
    with pytest.raises(OperationDefinitionError, match="name="):
        bbo.schedule(purge, "emails", "id", cron="5 * * * *")
    other = bbo.schedule(purge, "emails", "id", cron="5 * * * *", name="purge_at_5")
    assert [d.actor_name for d in cron_operations.scheduled()] == sorted(
        [first.actor_name, other.actor_name]
    )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda cls: bbo.schedule("no_such_operation", "emails", "id", cron="0 * * * *"),
            UnknownOperationClass,
        ),
        (lambda cls: bbo.schedule(int, "emails", "id", cron="0 * * * *"), UnknownOperationClass),
        (lambda cls: bbo.schedule(cls, "emails", "id", cron="61 * * * *"), InvalidCronExpression),
        (lambda cls: bbo.schedule(cls, "emails", "id", cron="* * *"), InvalidCronExpression),
        (lambda cls: bbo.schedule(cls, "emails", "id", cron="@often"), InvalidCronExpression),
        (
            lambda cls: bbo.schedule(cls, "emails", "id", cron="0 0 * * funday"),
            InvalidCronExpression,
        ),
        (lambda cls: bbo.schedule(cls, "emails", "uuid", cron="@hourly"), ColumnNotInCursor),
        (
            lambda cls: bbo.schedule(cls, "emails", "id", cron="@hourly", arguments=object()),
            InvalidArguments,
        ),
        (
            lambda cls: bbo.schedule(cls, "emails", "id", cron="@hourly", organization_id=1),
            InvalidScope,
        ),
        (
            lambda cls: bbo.schedule(cls, "emails", "id", cron="@hourly", batch_size=0),
            ValidationError,
        ),
    ],
    ids=[
        "unknown-name",
        "not-an-operation",
        "minute-61",
        "three-fields",
        "unknown-macro",
        "unknown-day",
        "column-not-in-cursor",
        "arguments-not-json",
        "organization",
        "batch-size-0",
    ],
)
def test_mistakes_fail_at_declaration_with_a_typed_error(
    broker: PostgresBroker,
    purge: type[bbo.BaseOperation],
    call: Callable[[type[bbo.BaseOperation]], Any],
    error: type[Exception],
) -> None:
    bbo.setup(broker)
    before = set(broker.actors)
    with pytest.raises(error):
        call(purge)
    assert set(broker.actors) == before
    assert cron_operations.scheduled() == []


@pytest.mark.parametrize("expression", ["0 3 * * sun", "0 3 * * 0", "0 3 * * 0,3", "0 3 * * 7"])
def test_a_sunday_schedule_fires_on_sundays(
    broker: PostgresBroker, purge: type[bbo.BaseOperation], expression: str
) -> None:
    declared = bbo.schedule(purge, "emails", "id", cron=expression)
    bbo.setup(broker)
    spec = actor_of(broker, declared).options["periodic"]

    # periodiq's Scheduler: send when validate(now), then sleep until next_valid_date(now)
    assert spec.validate(SUNDAY_3AM)
    assert spec.next_valid_date(SATURDAY_3AM) == SUNDAY_3AM
    if expression != "0 3 * * 7":  # periodiq 0.14 as is never fires these on a Sunday
        assert not periodiq.cron(expression).validate(SUNDAY_3AM)


# -- firing ----------------------------------------------------------------------------------
def test_firing_enqueues_a_cell_local_operation_and_wakes_the_pipeline(
    broker: PostgresBroker, purge: type[bbo.BaseOperation], emails: psycopg.Connection[Any]
) -> None:
    declared = bbo.schedule(purge, "emails", "id", cron="0 * * * *", batch_size=100)
    bbo.setup(broker)

    actor_of(broker, declared).fn()

    [(op_id, class_name, table, status)] = operations(emails)
    assert (class_name, table, status) == (purge.name, "public.emails", 0)
    operation = bbo.get_operation(op_id)
    assert operation.batch_size == 100
    # enqueue's wake-up: an orchestrator message for it, written with the stage lease
    assert operation.lease_owner is not None
    woken = emails.execute(
        "SELECT message -> 'args' FROM dramatiq.queue WHERE message ->> 'actor_name' = %s",
        [messages.ORCHESTRATOR],
    ).fetchall()
    assert woken == [(["main", str(op_id), operation.lease_owner, True],)]  # True: a wake-up


def test_two_firings_at_once_yield_one_operation(
    broker: PostgresBroker, purge: type[bbo.BaseOperation], emails: psycopg.Connection[Any]
) -> None:
    declared = bbo.schedule(purge, "emails", "id", cron="* * * * *")
    bbo.setup(broker)
    fire = actor_of(broker, declared).fn
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def periodiq_process() -> None:
        try:
            barrier.wait(timeout=10)
            fire()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=periodiq_process) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(operations(emails)) == 1


def test_a_second_firing_of_the_slot_after_the_operation_finished_yields_no_new_one(
    broker: PostgresBroker, purge: type[bbo.BaseOperation], emails: psycopg.Connection[Any]
) -> None:
    declared = bbo.schedule(purge, "emails", "id", cron="* * * * *")
    first = declared.fire()
    assert not first.duplicate
    assert bbo.run_to_completion(first.operation.id).status == OperationStatus.FINISHED

    again = declared.fire()  # the other periodiq process, a few seconds later

    assert again.duplicate and again.operation.id == first.operation.id
    assert len(operations(emails)) == 1
    # the next slot (a minute later) enqueues again
    emails.execute(
        "UPDATE bbo.background_operation_workers_cell_local"
        " SET created_at = created_at - interval '60 seconds'"
    )
    later = declared.fire()
    assert not later.duplicate and later.operation.id != first.operation.id
    assert len(operations(emails)) == 2


def test_the_next_firing_starts_from_the_batch_size_the_last_one_learned(
    broker: PostgresBroker, purge: type[bbo.BaseOperation], emails: psycopg.Connection[Any]
) -> None:
    declared = bbo.schedule(purge, "emails", "id", cron="0 * * * *")
    first = declared.fire()
    assert first.operation.batch_size == 1_000  # the default: nothing learned yet
    final, _ = drive(first.operation.id)  # the pipeline's stages, as a worker runs them
    assert final.status == OperationStatus.FINISHED and final.batch_size > 1_000

    emails.execute(  # the next slot, an hour later
        "UPDATE bbo.background_operation_workers_cell_local"
        " SET created_at = created_at - interval '1 hour'"
    )
    later = declared.fire()
    assert not later.duplicate
    assert later.operation.batch_size == final.batch_size


def test_a_firing_that_finds_its_operation_still_running_logs_it_at_debug_only(
    broker: PostgresBroker,
    purge: type[bbo.BaseOperation],
    emails: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    declared = bbo.schedule(purge, "emails", "id", cron="* * * * *", dedupe_seconds=0)
    caplog.set_level(logging.DEBUG, logger="dramatiq_bbo")
    first = declared.fire()
    again = declared.fire()  # the next slot, the first operation still queued

    assert again.duplicate and again.operation.id == first.operation.id
    logged = [(r.bbo["message"], r.levelno) for r in caplog.records if hasattr(r, "bbo")]
    assert (WORKER_TRANSITION, logging.INFO) in logged  # the first firing queued one
    assert (DUPLICATE_ENQUEUE, logging.DEBUG) in logged
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_worker_runs_the_periodic_actor(
    broker: PostgresBroker, purge: type[bbo.BaseOperation], emails: psycopg.Connection[Any]
) -> None:
    declared = bbo.schedule(purge, "emails", "id", cron="0 * * * *")
    bbo.setup(broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        # periodiq sends it with a scheduled_at option; its middleware processes it if recent
        actor_of(broker, declared).send_with_options(scheduled_at=str(pendulum.now()))
        wait_until(lambda: len(operations(emails)) == 1, timeout=30)
    finally:
        worker.stop()
    assert len(operations(emails)) == 1
