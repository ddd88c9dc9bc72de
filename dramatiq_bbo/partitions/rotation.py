"""When the next partition opens: once the current one's oldest row is
``partition_duration_days`` old.

"Its oldest row" means the oldest row created in it: a row moved in from an older partition
(an unfinished operation, :mod:`.moves`) keeps its ``created_at``, which predates the
partition, and must not make a young partition look old (it would rotate again at once).
So the question is whether the current partition holds a row created between its opening and
``now - duration``. It is asked only once the partition itself is that old (no scan before),
and each table's ``EXISTS`` stops at the first such row. An idle database with no new rows
never rotates: no empty partitions pile up.
"""

from __future__ import annotations

import datetime
from typing import Any

import psycopg

from ..queries import query
from .ddl import open_partition
from .tables import PARENTS, Registered


def old_enough(entry: Registered, duration: datetime.timedelta) -> bool:
    """Whether the partition has been open ``duration`` (the cheap test, before any scan)."""
    return entry.opened_at + duration <= entry.now


def rotation_due(
    conn: psycopg.Connection[Any], current: Registered, duration: datetime.timedelta
) -> bool:
    """Whether ``current`` holds a row created in it ``duration`` ago or earlier."""
    if not old_enough(current, duration):
        return False
    bounds = {
        "number": current.number,
        "since": current.opened_at,
        "until": current.now - duration,
    }
    for parent in PARENTS:
        statement = query("partitions_row_created_between", parent=parent.identifier)
        row = conn.execute(statement, bounds).fetchone()
        if row and row[0]:
            return True
    return False


def rotate_if_due(
    conn: psycopg.Connection[Any],
    current: Registered,
    duration: datetime.timedelta,
    lock_seconds: float,
) -> int | None:
    """Open partition ``current.number + 1`` when due; its number, or None."""
    if not rotation_due(conn, current, duration):
        return None
    number = current.number + 1
    open_partition(conn, number, lock_seconds)
    return number
