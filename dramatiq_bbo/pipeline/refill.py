"""Capacity refilled the moment it frees: the freed slots go to the operations waiting for
them, in the one dispatch order (:func:`~.picking.pick_schedulable`), in the transaction that
freed them.

A job that ends (the runner's chain), an orchestrator woken by an enqueue, and an enqueue
itself each take the per-database capacity lock (the scheduler's advisory lock, so no two
dispatchers fill the same slot), count the free slots, and hand them first to the operations
already waiting — an orchestrator message each, written in the same transaction (outbox). The
caller's own operation gets a slot only if one is left after that: it is first in line
because nothing else is waiting. Otherwise it goes back to the pool of schedulable operations
(its stage lease released), where the next freed slot or scheduler pass finds it in order.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from ..db import REGISTRY
from ..queries import query
from .handoff import lease_and_send
from .picking import SCOPES, pick_schedulable
from .runtime import messenger


def scheduler_lock_key(database: str) -> int:
    """The capacity lock of ``database``: a transaction-scoped advisory lock every dispatcher
    (scheduler pass, orchestrator, a job's end, an enqueue) counts the free slots under."""
    digest = hashlib.blake2b(f"bbo-scheduler:{database}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def jobs_in_flight(conn: psycopg.Connection[Any]) -> int:
    """Jobs of this database running or dispatched under a live lease, both scopes."""
    total = 0
    for _scope, (_operations, jobs) in SCOPES:
        row = conn.execute(query("pipeline_jobs_in_flight", jobs=jobs)).fetchone()
        total += int(row[0]) if row else 0
    return total


def free_slots(conn: psycopg.Connection[Any], database: str) -> int:
    """Take the capacity lock of ``database`` (until this transaction ends) and count the free
    slots: ``max_running_jobs`` minus the jobs in flight."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (scheduler_lock_key(database),))
    return max(0, int(REGISTRY.settings.max_running_jobs) - jobs_in_flight(conn))


def refill(conn: psycopg.Connection[Any], database: str, free: int, *, exclude: Any = None) -> int:
    """Hand up to ``free`` waiting operations, in dispatch order, their orchestrator message
    (under the capacity lock, :func:`free_slots`); how many were handed. ``exclude``: the
    caller's own operation, never handed here (it may be among the picked rows: one more is
    asked for so that it never hides a waiting one)."""
    if free <= 0 or not messenger().ready:  # no message can be sent: the pass covers it
        return 0
    picked = pick_schedulable(conn, database, free + 1, exclude=exclude)[:free]
    for operation in picked:
        lease_and_send(conn, database, operation)
    return len(picked)


def first_in_line(conn: psycopg.Connection[Any], database: str, operation_id: Any) -> bool:
    """Refill the free slots for the operations waiting, then say whether one is left for
    ``operation_id`` (False also when there is no free slot at all)."""
    free = free_slots(conn, database)
    return refill(conn, database, free, exclude=operation_id) < free
