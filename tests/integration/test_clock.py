"""One clock: Python's ``clock.now()`` and SQL's ``bbo.now()`` move together under a
simulated clock, and the library's time decisions in SQL (holds, row timestamps) follow it."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import clock
from dramatiq_bbo.db import REGISTRY
from tests.integration.enqueue_support import define_operation, make_todos

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.usefixtures("configured")

DAY = 86_400.0


def sql_offset() -> float:
    """``bbo.now() - now()`` in seconds, on a connection the library lends."""
    with REGISTRY.connection() as conn:
        row = conn.execute("SELECT extract(epoch FROM bbo.now() - now())::float8").fetchone()
    assert row is not None
    return float(row[0])


def test_without_a_simulated_clock_bbo_now_is_now() -> None:
    assert sql_offset() == 0.0
    assert abs((clock.now() - datetime.datetime.now(datetime.UTC)).total_seconds()) < 1


def test_sql_and_python_move_together_and_come_back() -> None:
    with clock.simulated() as simulated:
        simulated.advance(days=3)
        assert sql_offset() == pytest.approx(3 * DAY)
        python_offset = clock.now() - datetime.datetime.now(datetime.UTC)
        assert python_offset.total_seconds() == pytest.approx(3 * DAY, abs=1)
        simulated.advance(hours=12)
        assert sql_offset() == pytest.approx(3.5 * DAY)
        with pytest.raises(ValueError, match="only moves forward"):
            simulated.advance(days=-1)
    # The connection the pool lends next carries no stale offset.
    assert sql_offset() == 0.0


def test_holds_and_row_timestamps_follow_the_clock(
    conn: psycopg.Connection[Any], define_operation: Callable[..., type[bbo.BaseOperation]]
) -> None:
    make_todos(conn, 50)
    op = define_operation()
    with clock.simulated() as simulated:
        simulated.advance(days=10)
        record = bbo.enqueue(op, "todos", "id").operation
        with REGISTRY.connection() as lent:
            created = lent.execute(
                "SELECT extract(epoch FROM created_at - now())::float8"
                " FROM bbo.background_operation_workers_cell_local WHERE id = %s",
                [record.id],
            ).fetchone()
            lent.execute(
                "UPDATE bbo.background_operation_workers_cell_local"
                " SET on_hold_until = bbo.now() + interval '1 hour', hold_reason = 'test'"
                " WHERE id = %s",
                [record.id],
            )
            held = lent.execute(
                "SELECT paused_by FROM bbo.operations WHERE id = %s", [str(record.id)]
            ).fetchone()
        assert created is not None and created[0] == pytest.approx(10 * DAY, abs=5)
        assert held == ("health",)
        simulated.advance(hours=2)
        with REGISTRY.connection() as lent:
            after = lent.execute(
                "SELECT paused_by FROM bbo.operations WHERE id = %s", [str(record.id)]
            ).fetchone()
        assert after == (None,)
