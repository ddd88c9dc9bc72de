"""The tracking store's rows: read and delete a tracked operation and its failed items.

Each call is one short transaction on a pooled connection of the configured database
(``database=``, default ``main``). Reads never return an expired entry, and an id that is
unknown, cleaned up or expired is :class:`~dramatiq_bbo.errors.TrackedOperationNotFound`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import TrackedCountExceeded, TrackedOperationNotFound
from ..migrations import requires_schema
from ..queries import query
from . import inputs
from .records import FailedItem, TrackedOperation, failed_item_of, operation_of


@requires_schema
def get_operation(id: int, *, database: str = DEFAULT_DATABASE) -> TrackedOperation:
    """The live tracked operation ``id`` (counters, status...)."""
    with REGISTRY.connection(database) as conn:
        return read_operation(conn, inputs.tracked_id(id))


@requires_schema
def get_failed_items(id: int, *, database: str = DEFAULT_DATABASE) -> list[FailedItem]:
    """The failed items of the live tracked operation ``id``, oldest first."""
    with REGISTRY.connection(database) as conn, conn.transaction():
        read_operation(conn, inputs.tracked_id(id))  # unknown or expired: not found
        return read_failed_items(conn, id)


@requires_schema
def delete_operation(id: int, *, database: str = DEFAULT_DATABASE) -> None:
    """Delete the tracked operation ``id`` and its failed items (an expired one is deleted
    too, but reported as not found: it was already gone for readers)."""
    with REGISTRY.connection(database) as conn:
        row = conn.execute(query("tracking_delete"), {"id": inputs.tracked_id(id)}).fetchone()
    if row is None or not row[0]:
        raise TrackedOperationNotFound(f"no tracked operation {id} (unknown or expired)")


def read_operation(conn: psycopg.Connection[Any], id: int) -> TrackedOperation:
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(query("tracking_get"), {"id": id}).fetchone()
    if row is None:
        raise TrackedOperationNotFound(
            f"no tracked operation {id}: unknown, cleaned up after it finished, or expired"
        )
    return operation_of(row)


def read_failed_items(conn: psycopg.Connection[Any], id: int) -> list[FailedItem]:
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(query("tracking_get_failed_items"), {"id": id}).fetchall()
    return [failed_item_of(row) for row in rows]


def refusal(
    conn: psycopg.Connection[Any],
    id: int,
    *,
    adding: int | None = None,
    total_items: int | None = None,
) -> Exception:
    """Why a conditional UPDATE of tracked operation ``id`` found no row, as the error to
    raise: not found (unknown or expired), or the counts would exceed the total."""
    row = conn.execute(query("tracking_state"), {"id": id}).fetchone()
    if row is None or not row[3]:
        return TrackedOperationNotFound(
            f"no tracked operation {id}: unknown, cleaned up after it finished, or expired"
        )
    status, total, counted = row[0], int(row[1]), int(row[2])
    if status == "finished":
        return TrackedCountExceeded(f"tracked operation {id} already finished ({counted} items)")
    if total_items is not None:
        return TrackedCountExceeded(
            f"tracked operation {id} already counted {counted} items: its total cannot "
            f"become {total_items}"
        )
    return TrackedCountExceeded(
        f"tracked operation {id} counted {counted} of its {total} items: {adding} more "
        "would exceed its total"
    )
