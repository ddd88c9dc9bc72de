"""The capacity of a database: ``max_running_jobs`` slots, counted under one lock.

Every dispatcher — a scheduler pass, an orchestrator, a job that ends and refills its slot
(:func:`~.orchestrator.dispatch_waiting`), an enqueue starting its operation — takes the
per-database capacity lock (a transaction-scoped advisory lock) before it counts the jobs in
flight and fills free slots, so no two of them fill the same slot.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from ..db import REGISTRY
from ..queries import query
from .picking import SCOPES


def scheduler_lock_key(database: str) -> int:
    """The capacity lock of ``database``: a transaction-scoped advisory lock every dispatcher
    (scheduler pass, orchestrator, a job's end, an enqueue) counts the free slots under."""
    digest = hashlib.blake2b(f"bbo-scheduler:{database}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def jobs_in_flight(conn: psycopg.Connection[Any]) -> int:
    """Jobs of this database running or dispatched under a live lease, both scopes (both
    counts sent before either is read: one round trip in pipeline mode)."""
    cursors = [
        conn.execute(query("pipeline_jobs_in_flight", jobs=jobs), prepare=True)
        for _scope, (_operations, jobs) in SCOPES
    ]
    return sum(int(row[0]) for row in (cursor.fetchone() for cursor in cursors) if row)


def free_slots(conn: psycopg.Connection[Any], database: str) -> int:
    """Take the capacity lock of ``database`` (until this transaction ends) and count the free
    slots: ``max_running_jobs`` minus the jobs in flight."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (scheduler_lock_key(database),))
    return max(0, int(REGISTRY.settings.max_running_jobs) - jobs_in_flight(conn))
