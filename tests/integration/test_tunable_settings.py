"""Operator-tunable timeouts are settings, and the code in force reads them.

Each test sets one of them far below its default and shows the behaviour follows: a wait that
the default would stretch to seconds ends after the configured fraction of a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import health
from dramatiq_bbo.pipeline import scheduler, shutdown
from dramatiq_bbo.settings import Settings
from dramatiq_bbo.state.store import get_operation
from tests.integration.enqueue_support import define_operation, make_todos  # noqa: F401
from tests.integration.pipeline_support import no_broker  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_broker")

#: far below every default (5 s, 10 s): a run that ignored the setting would wait that long
SHORT = 0.3


def test_a_scheduler_pass_waits_for_the_capacity_lock_only_scheduler_lock_timeout_seconds(
    dsn: str, configured: str
) -> None:
    bbo.configure(dsn=dsn, scheduler_lock_timeout_seconds=SHORT)
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [scheduler.scheduler_lock_key("main")])
        started = time.monotonic()
        report = scheduler.tick("main")
        waited = time.monotonic() - started
    assert report.dispatched == []
    assert SHORT <= waited < 4.0, f"the pass waited {waited:.2f}s for the capacity lock"


def test_a_health_hold_gives_up_on_a_locked_operation_after_health_hold_lock_timeout_seconds(
    dsn: str,
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],  # noqa: F811
) -> None:
    bbo.configure(dsn=dsn, health_hold_lock_timeout_seconds=SHORT)
    make_todos(conn, 10)
    operation = bbo.enqueue(define_operation(), "todos", "id").operation
    locked = threading.Event()
    done = threading.Event()

    def lock_the_row() -> None:
        with psycopg.connect(dsn) as other, other.transaction():
            other.execute(
                "SELECT 1 FROM bbo.background_operation_workers_cell_local WHERE id = %s"
                " FOR UPDATE",
                [operation.id],
            )
            locked.set()
            done.wait(30)

    thread = threading.Thread(target=lock_the_row)
    thread.start()
    try:
        assert locked.wait(30)
        stop = health.Result("app_pressure", health.Signal.STOP, "queue latency")
        with psycopg.connect(dsn, autocommit=True) as hold_conn:
            started = time.monotonic()
            until = health.hold(hold_conn, operation, stop)
            waited = time.monotonic() - started
    finally:
        done.set()
        thread.join(30)
    assert until is None  # not written: the row stayed locked past the timeout
    assert SHORT <= waited < 4.0, f"the hold waited {waited:.2f}s for the row lock"
    assert get_operation(operation.id).on_hold_until is None


class _SlowConsumer:
    """A dramatiq consumer thread that does not stop: join() waits its whole timeout."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def join(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        time.sleep(min(timeout, 0.05))


def test_a_stopping_worker_waits_for_its_consumers_shutdown_consumer_stop_seconds(
    dsn: str, configured: str
) -> None:
    bbo.configure(dsn=dsn, shutdown_consumer_stop_seconds=SHORT)
    consumer = _SlowConsumer()
    try:
        shutdown._after_consumers_stop([consumer])
    finally:
        shutdown._consumers_stopped.clear()
    assert len(consumer.timeouts) == 1
    assert 0 < consumer.timeouts[0] <= SHORT


@pytest.mark.parametrize(
    "name",
    [
        "scheduler_lock_timeout_seconds",
        "health_hold_lock_timeout_seconds",
        "shutdown_consumer_stop_seconds",
    ],
)
def test_the_new_timeouts_refuse_values_out_of_their_bounds(name: str) -> None:
    for bad in (-1, float("nan"), 10**9, "5s"):
        with pytest.raises(bbo.errors.ConfigurationError, match=name):
            Settings().replace(**{name: bad})
