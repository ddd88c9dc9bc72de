"""With the pipeline set up, enqueue writes the operation's first hand-off in its own
transaction — the runner's message with the first job (one hop), or in the caller's
transaction, when it joined one, the orchestrator's first message (a wake-up): the operation
and its first hand-off commit together or not at all (a transactional outbox), so a web
process dying right after its commit cannot leave an operation waiting for the scheduler's
next pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo.pipeline.broker import default_middleware
from tests.integration.enqueue_support import define_operation, make_todos

__all__ = ["define_operation"]  # the fixture, re-exported for pytest


@pytest.fixture
def broker(configured: str) -> Iterator[PostgresBroker]:
    instance = PostgresBroker(url=configured, results=False, middleware=default_middleware())
    bbo.setup(instance)  # the conftest restores the process-wide hooks afterwards
    try:
        yield instance
    finally:
        instance.close()


def orchestrator_messages(conn: psycopg.Connection[Any]) -> list[Any]:
    return conn.execute(
        "SELECT message->'args' FROM dramatiq.queue"
        " WHERE message->>'actor_name' = 'bbo_orchestrator'"
    ).fetchall()


def test_enqueue_in_a_committed_caller_transaction_writes_the_first_message_with_it(
    broker: PostgresBroker,
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Any,  # noqa: F811
) -> None:
    operation_class = define_operation()
    make_todos(conn, 10)
    with psycopg.connect(configured) as caller:  # not autocommit: the caller's transaction
        result = bbo.enqueue(operation_class, "todos", "id", connection=caller)
        assert orchestrator_messages(conn) == []  # not visible before the caller commits
        caller.commit()
    record = bbo.get_operation(result.operation.id)
    assert record.lease_owner is not None
    woken = [(["main", str(record.id), record.lease_owner, True],)]  # True: a wake-up
    assert orchestrator_messages(conn) == woken


def test_enqueue_in_a_rolled_back_caller_transaction_leaves_no_message(
    broker: PostgresBroker,
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Any,  # noqa: F811
) -> None:
    operation_class = define_operation()
    make_todos(conn, 10)
    with psycopg.connect(configured) as caller:
        bbo.enqueue(operation_class, "todos", "id", connection=caller)
        caller.rollback()
    assert orchestrator_messages(conn) == []
    assert conn.execute(
        "SELECT count(*) FROM bbo.background_operation_workers_cell_local"
    ).fetchone() == (0,)


def test_a_duplicate_enqueue_writes_no_second_message(
    broker: PostgresBroker,
    conn: psycopg.Connection[Any],
    define_operation: Any,  # noqa: F811
) -> None:
    operation_class = define_operation()
    make_todos(conn, 10)
    first = bbo.enqueue(operation_class, "todos", "id")
    second = bbo.enqueue(operation_class, "todos", "id")
    assert second.duplicate and second.operation.id == first.operation.id
    sent = conn.execute("SELECT message->>'actor_name' FROM dramatiq.queue").fetchall()
    assert sent == [("bbo_runner",)]  # the first job's, written by the first enqueue
