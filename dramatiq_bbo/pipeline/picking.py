"""Which schedulable operations get the free capacity next: the one order every dispatcher
uses (a scheduler pass, a job that ends and frees its slot, an enqueue's wake-up).

Organization-scoped operations come first (users are waiting on them), then cell-local ones;
within a scope, highest priority, then least recently run. The caller holds the capacity
advisory lock (:func:`dramatiq_bbo.pipeline.scheduler.scheduler_lock_key`) and counts the
free slots; :func:`pick_schedulable` only chooses, locking the chosen rows (``SKIP LOCKED``)
in the caller's transaction.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg

from ..queries import query
from ..state.store import CELL_LOCAL_TABLES, ORGANIZATION_TABLES

#: scopes in the order they are served, with their (operations, jobs) tables
SCOPES = (("organization", ORGANIZATION_TABLES), ("cell_local", CELL_LOCAL_TABLES))


class Picked(NamedTuple):
    """A schedulable operation's row, as it was picked (locked in the caller's transaction)."""

    id: Any
    partition: int


def pick_schedulable(
    conn: psycopg.Connection[Any], database: str, limit: int, *, exclude: Any = None
) -> list[Picked]:
    """Up to ``limit`` schedulable operations of ``database``, in dispatch order, their rows
    locked; ``exclude``: an operation id never picked (the caller's own)."""
    picked: list[Picked] = []
    for _scope, (operations, jobs) in SCOPES:
        if len(picked) >= limit:
            break
        rows = conn.execute(
            query("pipeline_schedulable_operations", operations=operations, jobs=jobs),
            {"database_name": database, "limit": limit - len(picked)},
        ).fetchall()
        picked.extend(Picked(row[0], row[1]) for row in rows if row[0] != exclude)
    return picked
