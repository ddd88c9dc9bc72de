"""Shared pieces of the read-only organization tests: the two kinds of check behind one
switch, operations counting their visits, and delivering the pipeline's messages in the test
thread as a worker would (the way tests/integration/test_capacity_refill.py does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.pipeline import runner
from dramatiq_bbo.pipeline.messages import ORCHESTRATOR, RUNNER
from dramatiq_bbo.pipeline.orchestrator import orchestrate
from dramatiq_bbo.read_only import clear_read_only, mark_read_only

ROWS = 30
#: three sub-batches per job: a stop between them shows in the counts
SIZES = {"batch_size": 30, "sub_batch_size": 10, "min_batch_size": 10, "max_batch_size": 30}
ORGANIZATION = 7


class Flags:
    """The read-only switch of one test, whichever check is configured: the default table
    (``kind == "table"``) or a custom callable reading a dict (``"callable"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.reasons: dict[int, str] = {}
        self.asked: list[tuple[str, int]] = []

    def settings(self) -> dict[str, Any]:
        return {"organization_read_only": self.check} if self.kind == "callable" else {}

    def check(self, database_name: str, organization_id: int) -> str | bool:
        self.asked.append((database_name, organization_id))
        return self.reasons.get(organization_id, False)

    def flag(self, organization_id: int, reason: str) -> None:
        if self.kind == "callable":
            self.reasons[organization_id] = reason
        else:
            mark_read_only(organization_id, reason=reason)

    def lift(self, organization_id: int) -> None:
        if self.kind == "callable":
            del self.reasons[organization_id]
        else:
            assert clear_read_only(organization_id) is not None


@pytest.fixture(params=["table", "callable"])
def flags(request: pytest.FixtureRequest) -> Flags:
    return Flags(request.param)


def visiting(
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
    on_first_sub_batch: Callable[[], None] | None = None,
) -> Callable[..., bbo.OperationRecord]:
    """``enqueue(**options)``: an operation adding 1 to ``visits`` of its own table's rows
    (``rows_<n>``, n counting from 1); ``on_first_sub_batch`` runs once, inside the first
    sub-batch of the first operation."""
    made = 0
    pending = [on_first_sub_batch] if on_first_sub_batch else []

    def perform(self: Any) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            if pending:
                pending.pop()()

    def enqueue(**options: Any) -> bbo.OperationRecord:
        nonlocal made
        made += 1
        table = f"rows_{made}"
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, visits int DEFAULT 0)")
        conn.execute(f"INSERT INTO {table} (id) SELECT generate_series(1, {ROWS})")
        cls = define_operation(perform=perform, pause_ms=0, interval_seconds=0)
        return bbo.enqueue(cls, table, "id", **SIZES, **options).operation

    return enqueue


def shown(operation: bbo.OperationRecord) -> tuple[str | None, str | None]:
    """(paused_by, hold_reason) as ``bbo.operations`` shows them, on a connection the library
    lends (so a simulated clock counts)."""
    with REGISTRY.connection() as lent:
        row = lent.execute(
            "SELECT paused_by, hold_reason FROM bbo.operations WHERE id = %s", [str(operation.id)]
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def deliver(conn: psycopg.Connection[Any], *, delayed: bool = False) -> int:
    """Run the queued messages due now here, oldest first, until none is left; with
    ``delayed``, first those waiting for their eta (as a worker would once it passed). The
    number delivered."""
    count = 0
    if delayed:
        rows = conn.execute(
            "DELETE FROM dramatiq.queue WHERE state = 'queued' AND message->'options' ? 'eta'"
            " RETURNING message->>'actor_name', message->'args'"
        ).fetchall()
        for name, args in rows:
            count += _run(name, args)
    for _ in range(100):
        row = conn.execute(
            "DELETE FROM dramatiq.queue WHERE message_id = (SELECT message_id FROM dramatiq.queue"
            " WHERE state = 'queued' AND NOT (message->'options' ? 'eta')"
            " ORDER BY mtime, message_id LIMIT 1)"
            " RETURNING message->>'actor_name', message->'args'"
        ).fetchone()
        if row is None:
            return count
        count += _run(*row)
    raise AssertionError("the pipeline never went quiet")


def _run(name: str, args: list[Any]) -> int:
    if name == ORCHESTRATOR:
        orchestrate(*args)
    elif name == RUNNER:
        runner.run(*args)
    return 1


def delayed_messages(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM dramatiq.queue WHERE state = 'queued' AND message->'options' ? 'eta'"
    ).fetchone()
    assert row is not None
    return int(row[0])


__all__ = [
    "Flags",
    "ORGANIZATION",
    "ROWS",
    "deliver",
    "delayed_messages",
    "flags",
    "shown",
    "visiting",
]
