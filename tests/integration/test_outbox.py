"""The transactional outbox against a real Postgres, a real dramatiq-pg broker and worker.

A second connection LISTENs on the queue's channel. Absence of a notification is proven
without sleeping: after the event under test, another session sends a committed *marker*
on the same channel, and the listener must see the marker with nothing before it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.common import current_millis
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries
from dramatiq_pg import PostgresBroker
from psycopg import sql

from dramatiq_bbo.pipeline.outbox import (
    build_message,
    enqueue_in_transaction,
    send_in_transaction,
)
from tests.helpers import wait_until

QUEUE = "bbo_outbox_test"
CHANNEL = f"dramatiq.{QUEUE}.enqueue"


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        yield conn


@pytest.fixture
def state(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A stand-in for the pipeline's state tables: one row whose status the test changes."""
    conn.execute("CREATE TABLE stage_state (id int PRIMARY KEY, status text NOT NULL)")
    conn.execute("INSERT INTO stage_state VALUES (1, 'pending')")
    return conn


def notifications_until_marker(
    listener: psycopg.Connection[Any], dsn: str, timeout: float = 10.0
) -> list[str]:
    """Every payload received on CHANNEL before a marker sent now by another session."""
    marker = f"marker-{uuid.uuid4()}"
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, %s)", (CHANNEL, marker))
    received = []
    for notify in listener.notifies(timeout=timeout):
        if notify.payload == marker:
            return received
        received.append(notify.payload)
    raise AssertionError(f"marker not received within {timeout}s; got {received}")


def queue_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT message_id::text, queue_name, state::text, message FROM dramatiq.queue"
    ).fetchall()


def test_message_row_and_notify_appear_only_when_the_state_change_commits(dsn, state, listener):
    with psycopg.connect(dsn) as writer:
        writer.execute("UPDATE stage_state SET status = 'done' WHERE id = 1")
        message_id = send_in_transaction(writer, "next_stage", QUEUE, (42,), {"attempt": 1})

        assert queue_rows(state) == []
        assert notifications_until_marker(listener, dsn) == []

        writer.commit()

    ((row_id, queue_name, row_state, body),) = queue_rows(state)
    assert (row_id, queue_name, row_state) == (message_id, QUEUE, "queued")
    assert state.execute("SELECT status FROM stage_state").fetchone() == ("done",)
    (payload,) = notifications_until_marker(listener, dsn)
    assert json.loads(payload) == body
    assert (body["actor_name"], body["args"], body["kwargs"]) == (
        "next_stage",
        [42],
        {"attempt": 1},
    )


def test_rollback_leaves_neither_the_state_change_nor_a_message_nor_a_notify(dsn, state, listener):
    with pytest.raises(RuntimeError), psycopg.connect(dsn) as writer:
        with writer.transaction():
            writer.execute("UPDATE stage_state SET status = 'done' WHERE id = 1")
            send_in_transaction(writer, "next_stage", QUEUE, (42,))
            raise RuntimeError("the process dies before commit")

    assert queue_rows(state) == []
    assert state.execute("SELECT status FROM stage_state").fetchone() == ("pending",)
    assert notifications_until_marker(listener, dsn) == []


@pytest.mark.parametrize("size", [10, 9_000])
def test_outbox_writes_exactly_what_dramatiq_pg_broker_enqueue_writes(dsn, conn, listener, size):
    message = build_message("probe", QUEUE, ("x" * size,), {"n": 1}, options={"max_retries": 0})
    enqueue_in_transaction(conn, message)
    ours = queue_rows(conn)
    ours_notified = notifications_until_marker(listener, dsn)

    broker = PostgresBroker(url=dsn, results=False)
    try:
        broker.enqueue(message)  # an upsert of the same id: overwrites our row
    finally:
        broker.pool.closeall()

    assert queue_rows(conn) == ours
    assert notifications_until_marker(listener, dsn) == ours_notified
    (payload,) = ours_notified
    if size > 8_000:  # NOTIFY payloads stop at 8,000 bytes: consumers fetch the row by id
        assert json.loads(payload) == {"message_id": message.message_id}
    else:
        assert json.loads(payload) == ours[0][3]


# -- a real worker ------------------------------------------------------------------------------


@pytest.fixture
def worker(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[PostgresBroker]:
    """A dramatiq-pg broker with one recording actor on QUEUE, and a running worker."""
    conn.execute("CREATE TABLE received (args jsonb NOT NULL, received_ms bigint NOT NULL)")
    broker = PostgresBroker(
        url=dsn,
        results=False,
        middleware=[AgeLimit(), Callbacks(), Pipelines(), Retries(max_retries=0)],
    )

    def record(*args: Any) -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            own.execute(
                "INSERT INTO received VALUES (%s, %s)",
                (psycopg.types.json.Jsonb(list(args)), current_millis()),
            )

    dramatiq.actor(record, broker=broker, actor_name="record", queue_name=QUEUE)
    running = dramatiq.Worker(broker, worker_threads=1)
    running.start()
    try:
        yield broker
    finally:
        running.stop()
        broker.pool.closeall()


def received(conn: psycopg.Connection[Any]) -> list[tuple[Any, int]]:
    return conn.execute("SELECT args, received_ms FROM received ORDER BY received_ms").fetchall()


def test_a_real_worker_runs_a_message_sent_through_the_outbox(conn, worker):
    with conn.transaction():
        send_in_transaction(conn, "record", QUEUE, (7, "seven"))
    rows = wait_until(lambda: received(conn), timeout=15)
    assert [args for args, _ in rows] == [[7, "seven"]]


def test_a_delayed_message_runs_after_its_eta_and_not_before(conn, worker):
    sent_ms = current_millis()
    with conn.transaction():
        message_id = send_in_transaction(conn, "record", QUEUE, ("late",), delay_ms=300)
    (body,) = conn.execute(
        "SELECT message FROM dramatiq.queue WHERE message_id = %s", (message_id,)
    ).fetchone()
    eta = body["options"]["eta"]
    assert eta >= sent_ms + 300
    if current_millis() < eta:
        assert received(conn) == []

    ((args, received_ms),) = wait_until(lambda: received(conn), timeout=15)
    assert args == ["late"]
    assert received_ms >= eta
    assert received_ms - sent_ms >= 300


def test_a_payload_over_notify_limit_is_still_delivered(conn, worker):
    big = "y" * 9_000
    started = time.monotonic()
    with conn.transaction():
        send_in_transaction(conn, "record", QUEUE, (big,))
    ((args, _),) = wait_until(lambda: received(conn), timeout=15)
    assert args == [big]
    assert time.monotonic() - started < 15
