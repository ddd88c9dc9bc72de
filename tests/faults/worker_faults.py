"""What the fault tests share: this process set up as the web process, scheduler ticks from
threads, and real ``dramatiq`` workers running :mod:`tests.faults.fault_app`.

No periodiq process runs in the tests: where the pipeline needs the scheduler (recovery after
a kill, re-driving a lost message) a :class:`Ticker` calls ``scheduler.tick`` itself, far more
often than the minute cron would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.pipeline.broker import default_middleware
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import committed_rows

APP = "tests.faults.fault_app"
OPERATIONS = "bbo.background_operation_workers_cell_local"


@pytest.fixture
def app_process(dsn: str) -> Iterator[Callable[..., None]]:
    """``app_process(**settings)``: configure bbo here with ``settings`` and set the pipeline
    up on a broker of this test's database (so enqueue and the ticks send messages)."""
    brokers: list[PostgresBroker] = []

    def start(**settings: Any) -> None:
        bbo.configure(dsn=dsn, **settings)
        broker = PostgresBroker(url=dsn, results=False, middleware=default_middleware())
        brokers.append(broker)
        bbo.setup(broker)

    yield start
    for broker in brokers:
        broker.close()
    bbo.reset()


def start_workers(
    dramatiq_workers: Callable[..., DramatiqWorkers],
    settings: dict[str, Any],
    *,
    operations: str = "tests.acceptance.pipeline_operations",
    threads: int = 2,
) -> DramatiqWorkers:
    """One ``dramatiq`` worker process of :mod:`tests.faults.fault_app` with ``settings``."""
    return dramatiq_workers(
        processes=1,
        threads=threads,
        app=APP,
        extra_env={
            "BBO_FAULT_SETTINGS": json.dumps(settings),
            "BBO_FAULT_OPERATIONS": operations,
        },
    )


class Ticker:
    """A thread calling ``scheduler.tick()`` every ``period`` seconds until exit; keeps the
    ids each tick handed to the orchestrator."""

    def __init__(self, *, period: float = 0.25) -> None:
        self.period = period
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.dispatched: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="ticker", daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.dispatched += scheduler.tick("main").dispatched
            except BaseException as exc:  # surfaced at exit
                self.errors.append(exc)
                return
            self.stop.wait(self.period)

    def __enter__(self) -> Ticker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        if self.errors:
            raise self.errors[0]


def status(conn: psycopg.Connection[Any], operation_id: Any) -> OperationStatus:
    row = conn.execute(f"SELECT status FROM {OPERATIONS} WHERE id = %s", [operation_id]).fetchone()
    assert row is not None
    return OperationStatus(row[0])


def ended(conn: psycopg.Connection[Any], operation_id: Any) -> Callable[[], bool]:
    return lambda: status(conn, operation_id) not in OperationStatus.UNFINISHED


def processed(conn: psycopg.Connection[Any], operation_id: Any) -> int:
    return committed_rows(conn, operation_id)


def visits(conn: psycopg.Connection[Any], table: str) -> dict[int, int]:
    """``{visit count: rows}`` of a counter table."""
    return dict(conn.execute(f"SELECT visits, count(*) FROM {table} GROUP BY visits").fetchall())
