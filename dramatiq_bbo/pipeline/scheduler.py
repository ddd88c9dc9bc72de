"""The scheduler stage: once a minute (periodiq) and whenever woken, per database.

It recovers jobs whose runner died (running past their lease), then hands schedulable
operations to the orchestrator — organization-scoped first (users are waiting on them), then
cell-local; within a scope by priority, then least recently run — up to the free capacity
(``max_running_jobs`` minus jobs in flight). Each hand-off takes the operation's stage lease
and writes the orchestrator message in the same transaction (see ``messages``).

Two schedulers on one database serialise on a transaction-scoped advisory lock, so a tick
never over-fills the capacity; the loser waits (briefly) rather than skipping, so a wake-up
sent by ``enqueue`` is never lost behind a tick that started before the new row committed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..db import REGISTRY
from ..observability.logs import JOB_TRANSITION, event
from ..queries import query
from ..store import CELL_LOCAL_TABLES, ORGANIZATION_TABLES
from .messages import MESSENGER, ORCHESTRATOR, new_token

#: scopes in the order the scheduler serves them
SCOPES = (("organization", ORGANIZATION_TABLES), ("cell_local", CELL_LOCAL_TABLES))


@dataclass
class TickReport:
    database: str
    recovered: int = 0
    in_flight: int = 0
    dispatched: list[str] = field(default_factory=list)
    seconds: float = 0.0


def scheduler_lock_key(database: str) -> int:
    digest = hashlib.blake2b(f"bbo-scheduler:{database}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def tick(database: str = "main") -> TickReport:
    """One scheduler pass over ``database``; returns what it did (for logs and tests)."""
    started = time.monotonic()
    report = TickReport(database=database)
    settings = REGISTRY.settings
    with REGISTRY.connection(database) as conn, conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '10s'")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (scheduler_lock_key(database),))
        report.recovered = _recover_stale_jobs(conn)
        report.in_flight = jobs_in_flight(conn)
        free = int(settings.max_running_jobs) - report.in_flight
        for _scope, (operations, jobs) in SCOPES:
            if free <= 0:
                break
            rows = conn.execute(
                query("pipeline_schedulable_operations", operations=operations, jobs=jobs),
                {"database_name": database, "limit": free},
            ).fetchall()
            for operation_id, partition in rows:
                _dispatch(conn, database, operations, operation_id, partition)
                report.dispatched.append(str(operation_id))
            free -= len(rows)
    report.seconds = time.monotonic() - started
    return report


def _recover_stale_jobs(conn: psycopg.Connection[Any]) -> int:
    recovered = 0
    for _scope, (_operations, jobs) in SCOPES:
        for job_id, worker_id, attempts in conn.execute(
            query("pipeline_recover_stale_jobs", jobs=jobs)
        ).fetchall():
            recovered += 1
            event(
                JOB_TRANSITION,
                job_id=str(job_id),
                operation_id=str(worker_id),
                previous_state="running",
                new_state="pending",
                attempts=attempts,
                reason="lease_expired",
            )
    return recovered


def jobs_in_flight(conn: psycopg.Connection[Any]) -> int:
    """Jobs of this database running or dispatched under a live lease, both scopes."""
    total = 0
    for _scope, (_operations, jobs) in SCOPES:
        row = conn.execute(query("pipeline_jobs_in_flight", jobs=jobs)).fetchone()
        total += int(row[0]) if row else 0
    return total


def _dispatch(
    conn: psycopg.Connection[Any],
    database: str,
    operations: Any,
    operation_id: Any,
    partition: int,
) -> None:
    token = new_token()
    conn.execute(
        query("pipeline_lease_operation", operations=operations),
        {
            "token": token,
            "seconds": float(REGISTRY.settings.lease_seconds),
            "partition": partition,
            "id": operation_id,
        },
    )
    MESSENGER.send(conn, database, ORCHESTRATOR, database, str(operation_id), token)
