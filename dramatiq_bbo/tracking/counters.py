"""Creating a tracked operation and recording its outcomes: atomic counters, exactly once.

Outcomes are one statement (``tracking_record``): a conditional UPDATE that moves the
counters and refuses, in SQL, anything past the total, an expired or a finished operation
(no value is read into Python and written back, so concurrent workers never lose an
increment), with the failed items inserted only if it counted. The UPDATE that reaches the
total also finishes the operation: its condition ``status <> 'finished'`` and the row lock
make that exactly one caller, which runs :func:`~.finalisation.after_finish` once its
transaction committed. Being a single statement, it holds the row lock only inside the
server: 16 racing writers wait on the commit, not on each other's round trips.

:func:`record` works in a caller's transaction (a sub-batch's, see :mod:`.outcomes`); the
public functions each run one transaction of their own on a pooled connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..db import DEFAULT_DATABASE, REGISTRY
from ..migrations import requires_schema
from ..queries import query
from . import inputs
from .finalisation import after_finish, finish, finish_now
from .records import FailedItem
from .store import refusal


@requires_schema
def create_operation(
    operation_type: str,
    user_id: int,
    total_items: int,
    parameters: dict[str, Any] | None = None,
    *,
    database: str = DEFAULT_DATABASE,
) -> int | None:
    """Start tracking a bulk operation over ``total_items`` items; its id, or None when
    tracking of ``operation_type`` is turned off (``dramatiq-bbo tracking disable``).

    An operation of 0 items is finished at once (nothing can fail: it is cleaned up)."""
    settings = REGISTRY.settings
    values = {
        "operation_type": inputs.operation_type(operation_type),
        "user_id": inputs.user_id(user_id),
        "total_items": inputs.count("total_items", total_items),
        "parameters": inputs.parameters(parameters, settings),
        "ttl_seconds": settings.tracking_ttl_hours * 3600.0,
    }
    with REGISTRY.connection(database) as conn, conn.transaction():
        row = conn.execute(query("tracking_create"), values).fetchone()
    if row is None:
        return None
    tracked = int(row[0])
    if total_items == 0:
        finish_now(tracked, database=database)
    return tracked


@requires_schema
def increment_successful(id: int, n: int = 1, *, database: str = DEFAULT_DATABASE) -> None:
    """Count ``n`` more items of tracked operation ``id`` as successful."""
    _recorded(inputs.tracked_id(id), inputs.count("n", n), (), database)


@requires_schema
def add_failed_item(
    id: int,
    *,
    entity_id: Any,
    entity_type: str,
    entity_name: str,
    entity_full_path: str,
    error_message: str,
    error_code: str = inputs.UNEXPECTED_ERROR,
    database: str = DEFAULT_DATABASE,
) -> None:
    """Record one failed item of tracked operation ``id`` (and count it as failed)."""
    item = inputs.failed_item(
        entity_id=entity_id,
        entity_type=entity_type,
        entity_name=entity_name,
        entity_full_path=entity_full_path,
        error_message=error_message,
        error_code=error_code,
    )
    _recorded(inputs.tracked_id(id), 0, (item,), database)


@requires_schema
def set_total_items(id: int, total_items: int, *, database: str = DEFAULT_DATABASE) -> None:
    """Change the total of an unfinished tracked operation (when the number of items is
    known only after it was created); never below the items already counted."""
    values = {"id": inputs.tracked_id(id), "total_items": inputs.count("total_items", total_items)}
    with REGISTRY.connection(database) as conn:
        with conn.transaction():
            if conn.execute(query("tracking_set_total"), values).fetchone() is None:
                raise refusal(conn, id, total_items=total_items)
            finished = finish(conn, id)
    if finished:
        after_finish(id, database=database)


def record(
    conn: psycopg.Connection[Any], id: int, successful: int, failures: Sequence[FailedItem]
) -> bool:
    """In the caller's transaction: count ``successful`` items and record ``failures`` of
    ``id``; True when this completed it (then call ``after_finish`` once committed). Raises
    (and the caller's transaction must roll back) when the operation is not found or the
    outcomes would exceed its total."""
    if successful == 0 and not failures:
        return False
    values = {"id": id, "successful": successful, "failed": len(failures), **_columns(failures)}
    row = conn.execute(query("tracking_record"), values).fetchone()
    if row is None:
        raise refusal(conn, id, adding=successful + len(failures))
    return bool(row[0])


def _recorded(id: int, successful: int, failures: Sequence[FailedItem], database: str) -> None:
    with REGISTRY.connection(database) as conn:  # autocommit
        # one statement, its own transaction: the row lock is held by the server alone,
        # never across a round trip to this (perhaps busy) client
        finished = record(conn, id, successful, failures)
    if finished:
        after_finish(id, database=database)


def _columns(failures: Sequence[FailedItem]) -> dict[str, Any]:
    """The failed items as ``tracking_record`` takes them: one array per field."""
    return {
        "entity_ids": [item.entity_id for item in failures],
        "entity_types": [item.entity_type for item in failures],
        "entity_names": [item.entity_name for item in failures],
        "entity_full_paths": [item.entity_full_path for item in failures],
        "error_messages": [item.error_message for item in failures],
        "error_codes": [item.error_code for item in failures],
    }
