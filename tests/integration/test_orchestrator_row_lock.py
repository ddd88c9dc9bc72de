"""The orchestrator message that owns an operation's stage lease is never dropped because some
short transaction happens to hold the operation's row lock.

Found by the worker acceptance tests (tests/acceptance/test_pipeline.py): a scheduler tick
whose scan met the operation just as ``enqueue``'s wake-up committed kept the row locked (a row
that fails the re-check after a concurrent update stays locked until the tick commits); the
wake-up's orchestrator message, arriving then, found the row locked, took itself for a
redundant message and did nothing — the operation sat idle under a live lease until the lease
expired (5 minutes by default). The orchestrator now waits for the row lock; a lease check
afterwards still tells the message that must act from a redundant one.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.helpers import wait_until, without_broker

OPERATIONS = "bbo.background_operation_workers_cell_local"


def test_the_lease_owners_orchestrator_waits_for_a_row_lock_instead_of_dropping_out(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    with without_broker():  # no messages: the test plays them
        make_counter_table(conn, "items", 500)
        operation_id = bbo.enqueue(PipelineVisit, "items", "id").operation.id
        assert scheduler.tick("main").dispatched == [str(operation_id)]
        token = bbo.get_operation(operation_id).lease_owner
        assert token

        decisions: list[Decision] = []
        with psycopg.connect(configured, autocommit=True) as holder:
            with holder.transaction():
                # a short transaction that is not a stage holds the row lock
                holder.execute(
                    f"SELECT 1 FROM {OPERATIONS} WHERE id = %s FOR UPDATE", [operation_id]
                )
                thread = threading.Thread(
                    target=lambda: decisions.append(orchestrate("main", operation_id, token))
                )
                thread.start()
                wait_until(lambda: decisions or waiting_on_a_lock(conn), timeout=10)
                assert decisions == [], "the orchestrator gave up instead of waiting"
            thread.join(timeout=30)

        assert decisions == [Decision.DISPATCHED]
        (pending,) = conn.execute(
            "SELECT count(*) FROM bbo.background_operation_jobs_cell_local"
            " WHERE worker_id = %s AND status = 0 AND lease_expires_at > now()",
            [operation_id],
        ).fetchone()
        assert pending == 1
        # a second message for the same operation (another token) still does nothing
        assert orchestrate("main", operation_id, "another-token") == Decision.LEASED_ELSEWHERE


def waiting_on_a_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    ).fetchone()
    return bool(row and row[0])
