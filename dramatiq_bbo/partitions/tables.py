"""The four partitioned state tables and the names of their partitions.

A partition of a parent ``bbo.<table>`` holding the value ``n`` is the table
``bbo.<table>_<n>`` (0001 created ``..._1``); the manager creates every later one under that
name, so a partition's number is read back from its name and never parsed out of a bound
expression. Everything here builds identifiers from our own constants and integers.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..queries import query

SCHEMA = "bbo"


@dataclass(frozen=True)
class Parent:
    """One partitioned state table: its name, and whether it holds operations or jobs."""

    name: str
    operations: bool

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, self.name)

    @property
    def qualified(self) -> str:
        """``bbo.<name>``, as ``to_regclass`` and ``::regclass`` read it (our names need no
        quoting)."""
        return f"{SCHEMA}.{self.name}"

    def child_name(self, number: int) -> str:
        return f"{self.name}_{int(number)}"

    def child(self, number: int) -> sql.Identifier:
        return sql.Identifier(SCHEMA, self.child_name(number))


#: the four tables, operations first: a partition is opened in this order and retired in it
PARENTS: tuple[Parent, ...] = (
    Parent("background_operation_workers", operations=True),
    Parent("background_operation_workers_cell_local", operations=True),
    Parent("background_operation_jobs", operations=False),
    Parent("background_operation_jobs_cell_local", operations=False),
)
OPERATIONS_PARENTS = tuple(p for p in PARENTS if p.operations)
JOBS_PARENTS = tuple(p for p in PARENTS if not p.operations)


def current_partition(conn: psycopg.Connection[Any]) -> int:
    """The current partition: the newest registered one not dropped (where new rows go)."""
    row = conn.execute(query("partitions_current"), prepare=True).fetchone()
    return int(row[0]) if row else 1


def attached(conn: psycopg.Connection[Any], parent: Parent) -> dict[int, bool]:
    """The partitions attached to ``parent``: number → whether a concurrent detach of it is
    pending (was interrupted, and must be finalized)."""
    rows = conn.execute(query("partitions_attached"), {"parent": parent.qualified}).fetchall()
    return {int(number): bool(pending) for number, pending in rows}


def exists(conn: psycopg.Connection[Any], parent: Parent, number: int) -> bool:
    """Whether ``parent``'s partition ``number`` exists as a table, attached or not."""
    table = f"{SCHEMA}.{parent.child_name(number)}"
    row = conn.execute(query("partitions_table_exists"), {"table": table}).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class Registered:
    """One partition in the register (``bbo.partitions``), as of ``now`` (the clock's)."""

    number: int
    opened_at: datetime.datetime
    closed_at: datetime.datetime | None
    now: datetime.datetime


def register(conn: psycopg.Connection[Any]) -> list[Registered]:
    """The partitions not dropped, oldest first (the last is the current one)."""
    rows = conn.execute(query("partitions_register")).fetchall()
    return [Registered(int(n), opened, closed, now) for n, opened, closed, now in rows]
