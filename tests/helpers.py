"""Small helpers shared by tests: polling with a deadline instead of fixed sleeps, a runtime
without a broker, and reading the cell-local state rows."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dramatiq_bbo.pipeline.runtime import Messenger, current, installed


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate!r}")
        time.sleep(interval)


def without_broker() -> contextlib.AbstractContextManager[Any]:
    """The runtime in force minus its broker, for the block: the stages write no message (the
    test plays them, or only a scheduler pass may start the work), the middleware stays."""
    return installed(dataclasses.replace(current(), messenger=Messenger()))


#: the cell-local state tables, which the acceptance and fault tests' operations use
CELL_LOCAL_OPERATIONS = "bbo.background_operation_workers_cell_local"
CELL_LOCAL_JOBS = "bbo.background_operation_jobs_cell_local"


def operation_row(conn: psycopg.Connection[Any], operation_id: Any) -> dict[str, Any]:
    """A cell-local operation's row as a dict, read on ``conn``."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT * FROM {CELL_LOCAL_OPERATIONS} WHERE id = %s", [operation_id]
        ).fetchone()
    assert row is not None
    return row


def job_rows(conn: psycopg.Connection[Any], operation_id: Any) -> list[dict[str, Any]]:
    """A cell-local operation's job rows as dicts, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT * FROM {CELL_LOCAL_JOBS} WHERE worker_id = %s ORDER BY id", [operation_id]
        ).fetchall()


def committed_rows(conn: psycopg.Connection[Any], operation_id: Any) -> int:
    """Rows the operation's committed sub-batches processed, as an operator reads them: its
    row's counter plus what its jobs counted since their last roll-up (``bbo.operation_rows``)."""
    row = conn.execute(
        "SELECT processed_tuple_count FROM bbo.operation_rows WHERE id = %s",
        [str(operation_id)],
    ).fetchone()
    assert row is not None, f"no operation {operation_id}"
    return int(row[0])
