"""Retiring a partition: detached, then dropped, ``retention_days`` after it closed, once it
holds no unfinished operation and no pending or running job.

Retention counts from the partition's closing (when the next one opened): every row created
in it is at least that old by then. A partition that still holds unfinished work (an
operation that has been running without a pause since, which :mod:`.moves` never touches) is
kept, and retired at a later run once that work finished or moved.

Between the check and the detach, a row can come back to life (``bbo.retry`` reactivates a
failed operation wherever it is). So the detached tables are checked again before anything is
dropped: unfinished work found there puts the partition back (attached again, nothing lost),
and it is tried again at a later run. A retirement interrupted half way (some tables
detached or dropped) is finished by the next run: each step looks at what is there.
"""

from __future__ import annotations

import datetime
from typing import Any

import psycopg

from ..queries import query
from .ddl import attach, detach, drop
from .tables import PARENTS, Registered, attached, exists


def retention_passed(entry: Registered, retention: datetime.timedelta) -> bool:
    """Whether ``entry`` closed ``retention`` ago or earlier (the current one never has)."""
    return entry.closed_at is not None and entry.closed_at + retention <= entry.now


def unfinished_rows(conn: psycopg.Connection[Any], number: int) -> int:
    """Unfinished operations plus pending or running jobs in partition ``number``'s tables,
    attached or detached (a table already dropped counts none)."""
    total = 0
    for parent in PARENTS:
        if not exists(conn, parent, number):
            continue
        name = "partitions_unfinished_operations" if parent.operations else "partitions_live_jobs"
        row = conn.execute(query(name, child=parent.child(number))).fetchone()
        total += int(row[0]) if row else 0
    return total


def retire(conn: psycopg.Connection[Any], number: int, lock_seconds: float) -> bool:
    """Detach and drop partition ``number`` of the four tables (autocommit ``conn``) unless
    it holds unfinished work; whether it is gone. The caller registers the drop."""
    if unfinished_rows(conn, number):
        reattach(conn, number, lock_seconds)  # a retirement left half done: undone
        return False
    for parent in PARENTS:
        pending = attached(conn, parent).get(number)
        if pending is not None:
            detach(conn, parent, number, pending=pending, lock_seconds=lock_seconds)
    if unfinished_rows(conn, number):  # came back to life before the detach: put it back
        reattach(conn, number, lock_seconds)
        return False
    for parent in PARENTS:
        drop(conn, parent, number, lock_seconds)
    return True


def reattach(conn: psycopg.Connection[Any], number: int, lock_seconds: float) -> None:
    """Attach partition ``number``'s detached tables back to their parents."""
    for parent in PARENTS:
        if exists(conn, parent, number) and number not in attached(conn, parent):
            attach(conn, parent, number, lock_seconds)
