"""Finalising a tracked operation: exactly once, decided in SQL, acted on after commit.

The decision is a conditional UPDATE ``... WHERE status <> 'finished'`` that sets
``finished`` when the outcomes reached the total: the one recording outcomes
(``tracking_record``, see :mod:`.counters`), or ``tracking_finish`` after the total changed.
Row locks serialise the racing writers, so exactly one transaction finishes the row,
however many workers record at once. Its caller, once that transaction committed (never
before: a rolled-back sub-batch must not notify), calls :func:`after_finish`: the notifier
when items failed, then the cleanup (the rows are deleted). A notification that could not be
sent keeps the row, with its reason in ``notification_error``, until it expires.

A finaliser killed between its commit and its notification leaves a finished row claimed
long ago and never notified; the purge actor claims such rows again after a grace period
(:func:`reclaim`), so the notification is sent at least once.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import TrackedOperationNotFound
from ..logs import event
from ..queries import query
from . import events, notifier
from .store import read_failed_items, read_operation

#: how long a finished operation's notification claim holds before the purge retries it
RECLAIM_GRACE_SECONDS = 900.0


def finish(conn: psycopg.Connection[Any], id: int) -> bool:
    """In the caller's transaction: True for the one caller that finishes ``id`` (its
    outcomes reached its total); it must call :func:`after_finish` once that commits."""
    return conn.execute(query("tracking_finish"), {"id": id}).fetchone() is not None


def finish_now(id: int, *, database: str = DEFAULT_DATABASE) -> None:
    """Finish ``id`` in a transaction of its own if its outcomes reached its total."""
    with REGISTRY.connection(database) as conn:
        with conn.transaction():
            finished = finish(conn, id)
    if finished:
        after_finish(id, database=database)


def after_finish(id: int, *, database: str = DEFAULT_DATABASE) -> None:
    """Notify (when items failed), then clean up; run by the finaliser after its commit.

    Never raises: the outcomes that finished the operation are committed, and an error here
    must not make their caller retry them. A database error is logged (the purge notifies
    the operation later, see :func:`reclaim`)."""
    try:
        _notify_and_clean_up(id, database)
    except Exception as exc:
        event(
            events.FINALISATION_DEFERRED,
            level=logging.ERROR,
            tracked_operation_id=id,
            database_name=database,
            error=notifier.describe(exc),
        )


def _notify_and_clean_up(id: int, database: str) -> None:
    with REGISTRY.connection(database) as conn:
        try:
            operation = read_operation(conn, id)
        except TrackedOperationNotFound:
            return  # expired (or deleted) since: nothing left to tell
        items = read_failed_items(conn, id) if operation.failed_items else []
    if operation.failed_items:
        attempts, error = notifier.deliver(operation, items, REGISTRY.settings)
        if error is not None:
            with REGISTRY.connection(database) as conn:
                conn.execute(
                    query("tracking_notification_failed"),
                    {"id": id, "attempts": attempts, "error": error[:4000]},
                )
            event(
                events.NOTIFICATION_FAILED,
                level=logging.ERROR,
                tracked_operation_id=id,
                operation_type=operation.operation_type,
                attempts=attempts,
                error=error,
            )
            return
    with REGISTRY.connection(database) as conn:
        conn.execute(query("tracking_delete"), {"id": id})
    event(
        events.FINISHED,
        tracked_operation_id=id,
        operation_type=operation.operation_type,
        total_items=operation.total_items,
        successful_items=operation.successful_items,
        failed_items=operation.failed_items,
        notified=bool(operation.failed_items),
    )


def reclaim(database: str, *, limit: int) -> int:
    """Notify the finished operations whose finaliser died before it could; how many."""
    with REGISTRY.connection(database) as conn:
        rows = conn.execute(
            query("tracking_reclaim_notifications"),
            {"grace_seconds": RECLAIM_GRACE_SECONDS, "limit": limit},
        ).fetchall()
    for (id,) in rows:
        after_finish(int(id), database=database)
    return len(rows)
