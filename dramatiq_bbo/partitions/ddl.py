"""The DDL of sliding partitions, each statement under ``lock_timeout``.

Opening never locks the busy parents exclusively: each new partition is created as a
standalone table shaped like its parent (``LIKE ... INCLUDING DEFAULTS INCLUDING GENERATED
INCLUDING CONSTRAINTS``: the identity stays the parent's, so ids keep one sequence) and then
attached, which takes only ``SHARE UPDATE EXCLUSIVE`` on the parent; the parent's indexes and
row triggers are cloned onto it by the attach. The four tables and the register row commit in
one transaction, so a partition number is either current in all four tables or in none.

Retiring detaches ``CONCURRENTLY`` where the server allows it (PostgreSQL 14 and later, outside
a transaction block: the pooled connections are autocommit), which does not block the
parent's readers and writers either; an interrupted one leaves the partition "detach
pending", which :func:`detach` finalizes on the next try. Then the detached table is dropped
on its own: never ``CASCADE``, never a ``DELETE``.

Every statement waits at most ``lock_seconds`` for its locks; past that it fails
(``LockNotAvailable``) and the manager tries again at its next run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from ..queries import query
from .tables import PARENTS, Parent

#: the first server version with ``DETACH PARTITION ... CONCURRENTLY``
CONCURRENT_DETACH_VERSION = 140_000


def open_partition(conn: psycopg.Connection[Any], number: int, lock_seconds: float) -> None:
    """Create and attach partition ``number`` of the four tables and register it, in one
    transaction on ``conn`` (autocommit outside it)."""
    with conn.transaction():
        _local_lock_timeout(conn, lock_seconds)
        for parent in PARENTS:
            child = parent.child(number)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS"
                    " INCLUDING GENERATED INCLUDING CONSTRAINTS)"
                ).format(child, parent.identifier)
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    parent.identifier, child, sql.Literal(int(number))
                )
            )
        conn.execute(query("partitions_record_open"), {"number": int(number)})


def detach(
    conn: psycopg.Connection[Any],
    parent: Parent,
    number: int,
    *,
    pending: bool,
    lock_seconds: float,
) -> None:
    """Detach ``parent``'s partition ``number`` (autocommit ``conn``): ``CONCURRENTLY`` where
    the server has it, or finish a concurrent detach left ``pending``."""
    child = parent.child(number)
    if pending:
        how = sql.SQL("FINALIZE")
    elif conn.info.server_version >= CONCURRENT_DETACH_VERSION:
        how = sql.SQL("CONCURRENTLY")
    else:
        how = sql.SQL("")
    statement = sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
        parent.identifier, child, how
    )
    with session_lock_timeout(conn, lock_seconds):
        conn.execute(statement)


def attach(conn: psycopg.Connection[Any], parent: Parent, number: int, lock_seconds: float) -> None:
    """Attach ``parent``'s detached partition ``number`` back (a retirement that found
    unfinished work in it after all)."""
    statement = sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        parent.identifier, parent.child(number), sql.Literal(int(number))
    )
    with session_lock_timeout(conn, lock_seconds):
        conn.execute(statement)


def drop(conn: psycopg.Connection[Any], parent: Parent, number: int, lock_seconds: float) -> None:
    """Drop ``parent``'s detached partition ``number`` (``RESTRICT``: nothing depends on it)."""
    statement = sql.SQL("DROP TABLE IF EXISTS {} RESTRICT").format(parent.child(number))
    with session_lock_timeout(conn, lock_seconds):
        conn.execute(statement)


def _local_lock_timeout(conn: psycopg.Connection[Any], seconds: float) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, true)", [_milliseconds(seconds)])


@contextlib.contextmanager
def session_lock_timeout(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
    """``lock_timeout`` for the statements of an autocommit connection (a statement that
    cannot run in a transaction block cannot use ``SET LOCAL``), put back afterwards so the
    pooled connection returns as it was lent."""
    conn.execute("SELECT set_config('lock_timeout', %s, false)", [_milliseconds(seconds)])
    try:
        yield
    finally:
        conn.execute("RESET lock_timeout")


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(float(seconds) * 1000))}ms"
