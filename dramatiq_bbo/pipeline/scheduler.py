"""The scheduler stage: once a minute (periodiq), every few seconds in each worker process
(:mod:`.watchdog`), and whenever woken, per database.

A pass recovers jobs whose runner died or froze (running past their lease: back to pending,
one interruption more, the attempt refunded), then hands schedulable operations to the
orchestrator in the dispatch order of :mod:`.picking` — organization-scoped first (users are
waiting on them), except cell-local ones due for longer than ``max_wait_seconds``; within a
scope by priority, then due longest — up to the free capacity (``max_running_jobs`` minus jobs
in flight). Each hand-off takes the operation's stage lease and writes the
orchestrator message in the same transaction (see ``messages``).

Every step commits on its own and skips what is locked: the recovery is one short transaction
per batch of stale jobs (``SKIP LOCKED``), and the hand-offs go in small groups, each its own
transaction (one pooled connection for the pass, each step in pipeline mode, so a pass costs
a handful of round trips). A row held by a stuck transaction (a frozen runner's, say) is left
for a later pass; it never holds up the recovery or the dispatch of anything else.

Partitions: a pass first lets the partition manager run (at most once a minute per database
and process, :func:`dramatiq_bbo.partitions.manager.manage_if_due`): it opens the next
partition when due, moves idle unfinished operations into the current one — before this very
pass hands them on — and retires old partitions. It never raises into the pass.

Capacity: each group counts jobs in flight and picks its operations under a transaction-scoped
advisory lock per database, the one orchestrators take to count, so two schedulers never both
fill the same free slots; the loser waits (briefly) rather than skipping, so a wake-up sent by
``enqueue`` is never lost behind a pass that started before the new row committed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..db import REGISTRY
from ..logs import JOB_TRANSITION, event, logger
from ..partitions.manager import ManagerReport, manage_if_due
from ..queries import query
from ..state.records import JobStatus
from ..walk.timeouts import set_lock_timeout
from .handoff import lease_and_send
from .picking import SCOPES, pick_schedulable
from .refill import jobs_in_flight, scheduler_lock_key

__all__ = ["TickReport", "jobs_in_flight", "recover", "scheduler_lock_key", "tick"]

#: operations handed to the orchestrator per transaction
DISPATCH_GROUP = 10
#: stale jobs recovered per transaction (a pass loops until none is left)
RECOVERY_BATCH = 100


@dataclass
class TickReport:
    database: str
    recovered: int = 0
    in_flight: int = 0
    dispatched: list[str] = field(default_factory=list)
    recovered_operations: list[str] = field(default_factory=list)
    #: what the partition manager did in this pass (None: not due in this process)
    partitions: ManagerReport | None = None
    seconds: float = 0.0


def tick(database: str = "main") -> TickReport:
    """One scheduler pass over ``database``; returns what it did (for logs and tests)."""
    started = time.monotonic()
    report = TickReport(database=database)
    budget: int | None = None
    report.partitions = manage_if_due(database)  # logs its failures, never raises
    try:
        with REGISTRY.connection(database) as conn:  # one connection, a transaction per step
            _recover_on(conn, report)
            while budget is None or budget > 0:
                budget, dispatched = _dispatch_group(conn, database, budget, report)
                if not dispatched:
                    break
    except psycopg.errors.LockNotAvailable:
        # Another scheduler or an orchestrator held the advisory lock for long: it is
        # dispatching anyway, and the next pass does the rest.
        logger.info("scheduler pass on %s: dispatch skipped, the capacity lock is busy", database)
    report.seconds = time.monotonic() - started
    return report


def recover(database: str, report: TickReport | None = None) -> int:
    """Put the jobs whose lease expired back to pending, in short transactions that skip the
    rows locked right now (both scopes in each, as long as either has more); the number
    recovered."""
    report = report or TickReport(database=database)
    with REGISTRY.connection(database) as conn:
        return _recover_on(conn, report)


def _recover_on(conn: psycopg.Connection[Any], report: TickReport) -> int:
    max_interruptions = int(REGISTRY.settings.max_interruptions)
    tables = [jobs for _scope, (_operations, jobs) in SCOPES]
    while tables:
        tables = _recover_batch(conn, tables, max_interruptions, report)
    return report.recovered


def _recover_batch(
    conn: psycopg.Connection[Any], tables: list[Any], max_interruptions: int, report: TickReport
) -> list[Any]:
    """One short transaction, one round trip and its commit (pipeline mode): up to
    ``RECOVERY_BATCH`` stale jobs of each jobs table back to pending (logged and counted in
    ``report``); the tables that may have more."""
    with conn.pipeline(), conn.transaction():
        set_lock_timeout(conn, REGISTRY.settings.scheduler_lock_timeout_seconds)
        cursors = [
            conn.execute(
                query("pipeline_recover_stale_jobs", jobs=jobs),
                {"limit": RECOVERY_BATCH, "max_interruptions": max_interruptions},
                prepare=True,  # run by every pass of every worker: plan it once
            )
            for jobs in tables
        ]
        batches = [cursor.fetchall() for cursor in cursors]
    for rows in batches:
        for job_id, worker_id, attempts, interruptions, status in rows:
            report.recovered += 1
            report.recovered_operations.append(str(worker_id))
            event(
                JOB_TRANSITION,
                job_id=str(job_id),
                operation_id=str(worker_id),
                previous_state="running",
                new_state=JobStatus(status).name.lower(),
                attempts=attempts,
                interruptions=interruptions,
                reason="lease_expired",
            )
    return [jobs for jobs, rows in zip(tables, batches, strict=True) if len(rows) == RECOVERY_BATCH]


def _dispatch_group(
    conn: psycopg.Connection[Any], database: str, budget: int | None, report: TickReport
) -> tuple[int, int]:
    """One transaction: count jobs in flight under the advisory lock, then hand up to
    ``DISPATCH_GROUP`` schedulable operations (skipping locked rows) to the orchestrator.
    Returns the budget left for this pass, and how many were handed off.

    In pipeline mode: the statements whose results are not read (the lock timeout, the lock,
    each hand-off's lease and message) travel with the next that is, so the group costs a few
    round trips (count, the picks, commit), not two per operation."""
    with conn.pipeline(), conn.transaction():
        set_lock_timeout(conn, REGISTRY.settings.scheduler_lock_timeout_seconds)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (scheduler_lock_key(database),))
        in_flight = jobs_in_flight(conn)
        if budget is None:  # the pass's first group: the capacity it may fill
            report.in_flight = in_flight
            budget = int(REGISTRY.settings.max_running_jobs) - in_flight
        free = min(budget, int(REGISTRY.settings.max_running_jobs) - in_flight, DISPATCH_GROUP)
        if free <= 0:
            return 0, 0
        rows = pick_schedulable(conn, database, free)
        for picked in rows:
            lease_and_send(conn, database, picked)
            report.dispatched.append(str(picked.id))
    return budget - len(rows), len(rows) if len(rows) == free else 0
