"""Setup mistakes say what is wrong and what to do, at once: an unmigrated or older schema
(``SchemaNotInstalled`` naming ``dramatiq-bbo migrate``), a broker that is not dramatiq-pg's
(``UnsupportedBroker``), and operations enqueued in a process that never called
``setup(broker)`` (one warning per process)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo.errors import ConfigurationError, SchemaNotInstalled, UnsupportedBroker
from dramatiq_bbo.logs import PIPELINE_NOT_SET_UP
from dramatiq_bbo.migrations import migration_files
from dramatiq_bbo.pipeline import messages
from dramatiq_bbo.pipeline.broker import default_middleware
from dramatiq_bbo.pipeline.runtime import clear, current
from dramatiq_bbo.pipeline.setup_checks import forget_warning
from tests.integration.enqueue_support import define_operation, make_todos

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

#: a mistake is reported at once: no connect retry, no lock wait
FAST = 5.0


@pytest.fixture
def brokers() -> Iterator[Callable[[str], PostgresBroker]]:
    made: list[PostgresBroker] = []

    def make(dsn: str) -> PostgresBroker:
        broker = PostgresBroker(url=dsn, results=False, middleware=default_middleware())
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def unconfigured_afterwards() -> Iterator[None]:
    yield
    bbo.reset()


def timed(call: Callable[[], Any], error: type[Exception]) -> tuple[str, float]:
    """The message of the ``error`` that ``call`` raises, and how long it took."""
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    return str(caught.value), time.monotonic() - started


# -- the schema ------------------------------------------------------------------------------
@pytest.mark.usefixtures("unconfigured_afterwards")
def test_an_unmigrated_database_tells_every_entry_point_to_run_migrate(
    empty_dsn: str,
    define_operation: Callable[..., type[bbo.BaseOperation]],
    brokers: Callable[[str], PostgresBroker],
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        make_todos(conn, 10)
    bbo.configure(dsn=empty_dsn)
    actors = bbo.setup(brokers(empty_dsn))
    op = define_operation()

    calls: dict[str, Callable[[], Any]] = {
        "enqueue": lambda: bbo.enqueue(op, "todos", "id"),
        "get_operation": lambda: bbo.get_operation(1),
        "run_to_completion": lambda: bbo.run_to_completion(1),
        "scheduler actor": lambda: actors[messages.SCHEDULER].fn("main"),
        "orchestrator actor": lambda: actors[messages.ORCHESTRATOR].fn("main", "1", None),
        "runner actor": lambda: actors[messages.RUNNER].fn("main", "1", "1"),
        "scheduler tick": lambda: actors[messages.TICK].fn(),
    }
    for what, call in calls.items():
        message, seconds = timed(call, SchemaNotInstalled)
        assert "not installed in database 'main'" in message, what
        assert "run `dramatiq-bbo migrate --dsn '" in message, what
        assert seconds < FAST, f"{what} took {seconds:.1f} s"
    with psycopg.connect(empty_dsn) as conn:  # nothing was written: there is nowhere to
        assert conn.execute("SELECT to_regnamespace('bbo')").fetchone() == (None,)


@pytest.mark.usefixtures("unconfigured_afterwards")
def test_the_migrate_hint_never_shows_the_password(empty_dsn: str) -> None:
    dsn = psycopg.conninfo.make_conninfo(empty_dsn, password="s3cret-pw")
    bbo.configure(dsn=dsn)
    message, _ = timed(lambda: bbo.get_operation(1), Exception)
    if "password authentication failed" in message:  # a server that checks passwords
        pytest.skip("this server refuses the made-up password")
    assert "dramatiq-bbo migrate --dsn" in message
    assert "s3cret-pw" not in message


def test_a_schema_older_than_the_library_names_the_missing_migrations(
    dsn: str, conn: psycopg.Connection[Any], unconfigured_afterwards: None
) -> None:
    latest = migration_files()[-1].version
    conn.execute("DELETE FROM bbo.schema_migrations WHERE version = %s", [latest])
    bbo.configure(dsn=dsn)

    message, seconds = timed(lambda: bbo.get_operation(1), SchemaNotInstalled)

    assert f"older than this dramatiq-bbo (migrations {latest} are not applied)" in message
    assert "run `dramatiq-bbo migrate --dsn" in message
    assert seconds < FAST


def test_a_schema_dropped_after_the_first_check_is_still_reported_as_not_installed(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
) -> None:
    make_todos(conn, 10)
    operation = bbo.enqueue(define_operation(), "todos", "id").operation  # schema checked here
    conn.execute("DROP SCHEMA bbo CASCADE")

    message, _ = timed(lambda: bbo.get_operation(operation.id), SchemaNotInstalled)

    assert 'relation "bbo.' in message and "dramatiq-bbo migrate" in message


def test_a_current_schema_is_checked_once_per_process_and_database(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(bbo.errors.OperationNotFound):
        bbo.get_operation(1)  # checked here, found current
    latest = migration_files()[-1].version
    conn.execute("DELETE FROM bbo.schema_migrations WHERE version = %s", [latest])

    # not read again in this process: the next calls cost no schema query
    for _ in range(3):
        with pytest.raises(bbo.errors.OperationNotFound):
            bbo.get_operation(1)


# -- the broker ------------------------------------------------------------------------------
def test_setup_refuses_a_broker_that_is_not_dramatiq_pg_and_declares_nothing() -> None:
    broker = StubBroker(middleware=default_middleware())

    message, seconds = timed(lambda: bbo.setup(broker), UnsupportedBroker)

    assert "dramatiq.brokers.stub.StubBroker" in message
    assert "dramatiq_pg.PostgresBroker(url=" in message
    assert issubclass(UnsupportedBroker, ConfigurationError)
    assert broker.actors == {} and current().messenger.broker is not broker
    assert seconds < FAST


def test_setup_accepts_a_subclass_of_the_postgres_broker(configured: str) -> None:
    class AppBroker(PostgresBroker):
        pass

    broker = AppBroker(url=configured, results=False, middleware=default_middleware())
    try:
        actors = bbo.setup(broker)
    finally:
        broker.close()
    assert set(actors) >= {messages.ORCHESTRATOR, messages.RUNNER, messages.SCHEDULER}


# -- enqueue without setup -----------------------------------------------------------------------
@pytest.fixture
def pipeline_events(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, logger="dramatiq_bbo")
    forget_warning()

    def events() -> list[dict[str, Any]]:
        return [
            r.bbo
            for r in caplog.records
            if getattr(r, "bbo", {}).get("message") == PIPELINE_NOT_SET_UP
        ]

    return events


def test_enqueue_without_setup_warns_once_per_process_that_the_operation_waits_for_a_tick(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
    pipeline_events: Callable[[], list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clear()  # no setup in force (the configured fixture's reset clears it again)
    make_todos(conn, 10)

    first = bbo.enqueue(define_operation(), "todos", "id").operation
    bbo.enqueue(define_operation(), "todos", "id")

    (warning,) = pipeline_events()
    assert warning["operation_id"] == str(first.id)
    assert "bbo.setup(broker)" in warning["hint"]
    assert "scheduler tick" in warning["hint"]
    levels = [
        r.levelno
        for r in caplog.records
        if getattr(r, "bbo", {}).get("message") == PIPELINE_NOT_SET_UP
    ]
    assert levels == [logging.WARNING]


def test_enqueue_after_setup_does_not_warn(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
    pipeline_events: Callable[[], list[dict[str, Any]]],
    brokers: Callable[[str], PostgresBroker],
) -> None:
    make_todos(conn, 10)
    bbo.setup(brokers(configured))

    bbo.enqueue(define_operation(), "todos", "id")

    assert pipeline_events() == []
