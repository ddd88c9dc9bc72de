"""Operation classes and readers shared by the steering tests (tests/integration/test_steering*).

``counters(id bigint PRIMARY KEY, visits int)``: every operation here adds one visit to each
row of its sub-batch, so a test can prove each row was visited exactly once whatever
stopped, failed or retried the operation meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.logs import logger
from tests.helpers import CELL_LOCAL_JOBS, CELL_LOCAL_OPERATIONS


def make_counters(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute("CREATE TABLE counters (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO counters (id) SELECT g FROM generate_series(1, %s) AS g", [rows])
    conn.execute("ANALYZE counters")


def visits(conn: psycopg.Connection[Any]) -> dict[int, int]:
    """``{visits: rows}`` over the counters table."""
    return dict(conn.execute("SELECT visits, count(*) FROM counters GROUP BY visits").fetchall())


class Visit(bbo.BaseOperation):
    """One visit per row."""

    name = "steering.visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


class FailWhileBroken(bbo.BaseOperation):
    """One visit per row; a sub-batch holding a row listed in ``broken(id)`` fails (rolled
    back), as a bug in an operation would, until the test fixes it by emptying that table."""

    name = "steering.fail_while_broken"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            low, high = sub_batch.bounds
            row = sub_batch.connection.execute(
                "SELECT count(*) FROM broken WHERE id BETWEEN %s AND %s", [low, high]
            ).fetchone()
            if row and row[0]:
                raise RuntimeError(f"a row between {low} and {high} is broken")


class DisableItself(bbo.BaseOperation):
    """One visit per row, each sub-batch taking at least ``SLOW_SECONDS`` (so the status is
    re-read at every boundary); in the sub-batch ending at row ``arguments["disable_at"]``
    of a job's first run it disables its own class on another connection, as an operator
    would mid-job (a run resumed from a checkpoint does not do it again)."""

    name = "steering.disable_itself"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0
    SLOW_SECONDS = 0.12

    def perform(self) -> None:
        first_run = self.job.checkpoint_cursor is None
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            time.sleep(self.SLOW_SECONDS)
            if first_run and sub_batch.bounds[1] == self.arguments.get("disable_at"):
                bbo.disable(self.name, reason="mid-job", by="test")


class ResizeItself(bbo.BaseOperation):
    """One visit per row; its first job sets the operation's batch size to
    ``arguments["batch_size"]`` mid-job, as an operator would with ``bbo.update``."""

    name = "steering.resize_itself"
    operation_name = "update_all"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
        if self.job.min_cursor == self.operation.min_cursor:
            bbo.update(self.operation.id, batch_size=self.arguments["batch_size"], by="test")


def operation_row(conn: psycopg.Connection[Any], operation_id: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            f"SELECT * FROM {CELL_LOCAL_OPERATIONS} WHERE id = %s", [operation_id]
        ).fetchone()
    assert row is not None
    return row


def state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """Everything steering may write: operation rows, job rows, disabled classes."""
    return tuple(
        conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        for table in (
            CELL_LOCAL_OPERATIONS,
            CELL_LOCAL_JOBS,
            "bbo.background_operation_workers",
            "bbo.background_operation_jobs",
            "bbo.disabled_classes",
        )
    )


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """The structured events logged during the test (each its ``bbo`` payload)."""
    captured: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            payload = getattr(record, "bbo", None)
            if isinstance(payload, dict):
                captured.append(payload)

    handler = Collect(level=logging.DEBUG)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def named(events: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
    return [e for e in events if e["message"] == message]
