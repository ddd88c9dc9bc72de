"""The partition manager: one run opens the next partition when due, moves idle unfinished
operations into the current one, and retires the partitions past retention.

Run by the scheduler's pass (:func:`manage_if_due`, at most once a minute per database and
process), and callable directly (:func:`manage`). Safe with several schedulers: a run holds a
session advisory lock (one per database: Postgres scopes advisory locks to it), taken with
``pg_try_advisory_lock``, and a scheduler that finds it taken skips its run (another one is
doing the work). Idempotent: each step looks at
what is there (the register, the catalog, the rows) and does what is left.

Every DDL statement runs under ``lock_timeout`` (``scheduler_lock_timeout_seconds``). A step
that fails — a lock not granted in time, a role not allowed to create tables — is logged
(``background_operation_partition_step_failed``) and the next steps still run; the failed one
is tried again at the next run. Nothing here ever raises into the scheduler's pass.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .. import clock
from ..db import REGISTRY
from ..logs import (
    PARTITION_DROPPED,
    PARTITION_KEPT,
    PARTITION_OPENED,
    PARTITION_OPERATIONS_MOVED,
    PARTITION_STEP_FAILED,
    event,
)
from ..queries import query
from .moves import move_idle_operations
from .retirement import retention_passed, retire
from .rotation import rotate_if_due
from .tables import register

#: how often a scheduler pass runs the manager, per database and process (clock seconds)
MANAGE_EVERY_SECONDS = 60.0

_LAST_RUN: dict[str, datetime.datetime] = {}
_LAST_RUN_LOCK = threading.Lock()


@dataclass
class ManagerReport:
    """What one run did (for logs and tests)."""

    database: str
    #: False when another scheduler held the manager's lock (it does the work)
    ran: bool = False
    current: int | None = None
    opened: int | None = None
    moved: int = 0
    dropped: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    #: the steps that failed, each ``step: error`` (tried again at the next run)
    failures: list[str] = field(default_factory=list)


def lock_key() -> int:
    """The session advisory lock key of the manager, the same in every process. Postgres
    scopes advisory locks to the database, so this one key serialises the managers of one
    database — even when it is registered under two names — and no others."""
    text = "dramatiq_bbo.partitions.manager"
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def manage_if_due(database: str = "main") -> ManagerReport | None:
    """:func:`manage`, unless this process ran it for ``database`` less than
    ``MANAGE_EVERY_SECONDS`` ago on the clock (a scheduler pass runs every few seconds)."""
    now = clock.now()
    with _LAST_RUN_LOCK:
        last = _LAST_RUN.get(database)
        # (a clock set back, as a test's simulated clock can be, counts as due)
        if last is not None and 0 <= (now - last).total_seconds() < MANAGE_EVERY_SECONDS:
            return None
        _LAST_RUN[database] = now
    return manage(database)


def manage(database: str = "main") -> ManagerReport:
    """One run of the manager over ``database``; never raises (failures are in the report
    and the log)."""
    report = ManagerReport(database=database)
    try:
        with REGISTRY.connection(database) as conn:
            key = lock_key()
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not (row and row[0]):
                return report
            try:
                report.ran = True
                _run(conn, report)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    except Exception as exc:  # the connection lost, say: the next run tries again
        _failed(report, "connection", exc)
    return report


def _run(conn: psycopg.Connection[Any], report: ManagerReport) -> None:
    settings = REGISTRY.settings
    lock_seconds = float(settings.scheduler_lock_timeout_seconds)
    duration = datetime.timedelta(days=float(settings.partition_duration_days))
    retention = datetime.timedelta(days=float(settings.retention_days))
    entries = register(conn)
    if not entries:
        return
    report.current = entries[-1].number
    report.opened = _step(
        report, "open", lambda: rotate_if_due(conn, entries[-1], duration, lock_seconds)
    )
    if report.opened is not None:
        report.current = report.opened
        event(PARTITION_OPENED, database_name=report.database, partition=report.opened)
    current = report.current
    report.moved = (
        _step(report, "move", lambda: move_idle_operations(conn, current, lock_seconds)) or 0
    )
    if report.moved:
        event(
            PARTITION_OPERATIONS_MOVED,
            database_name=report.database,
            partition=current,
            moved=report.moved,
        )
    for entry in entries:
        if entry.number < current and retention_passed(entry, retention):
            _retire(conn, report, entry.number, lock_seconds)


def _retire(
    conn: psycopg.Connection[Any], report: ManagerReport, number: int, lock_seconds: float
) -> None:
    """Retire partition ``number`` and register it dropped; kept (logged at debug: it is
    asked again at every run) while it holds unfinished work."""

    def retire_and_record() -> bool:
        if not retire(conn, number, lock_seconds):
            return False
        conn.execute(query("partitions_record_dropped"), {"number": number})
        return True

    gone = _step(report, f"retire {number}", retire_and_record)
    if gone:
        report.dropped.append(number)
        event(PARTITION_DROPPED, database_name=report.database, partition=number)
    elif gone is not None:
        report.kept.append(number)
        event(PARTITION_KEPT, level=logging.DEBUG, database_name=report.database, partition=number)


def _step(report: ManagerReport, name: str, action: Callable[[], Any]) -> Any:
    """``action()``, or None after logging its failure (the run goes on)."""
    try:
        return action()
    except Exception as exc:
        _failed(report, name, exc)
        return None


def _failed(report: ManagerReport, step: str, exc: BaseException) -> None:
    error = " ".join(str(exc).split()) or type(exc).__name__
    report.failures.append(f"{step}: {error}")
    event(
        PARTITION_STEP_FAILED,
        level=logging.WARNING,
        database_name=report.database,
        step=step,
        error_class=type(exc).__name__,
        error=error,
    )
