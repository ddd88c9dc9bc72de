"""What operators read about partitions: each one with its rows per table, its age and its
state, for ``dramatiq-bbo partitions`` and any page that shows them.

The row counts are exact (``count(*)`` of each partition, read through its parent table, so
the application's own privileges suffice): the listing is an operator's question, asked now
and then, not a dashboard polled every second.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import Any

import psycopg

from ..db import REGISTRY
from ..queries import query
from .retirement import retention_passed
from .tables import PARENTS, Parent, Registered, attached, register


class PartitionState(enum.StrEnum):
    #: where new operations go
    CURRENT = "current"
    #: closed, still within its retention
    OLDER = "older"
    #: past its retention and holding nothing unfinished: the manager's next run drops it
    DETACHABLE = "detachable"
    #: past its retention but holding unfinished work (kept until it finishes or moves)
    HELD = "held"
    #: some of its tables detached and not dropped yet (a retirement under way or interrupted)
    DETACHED = "detached"


@dataclass(frozen=True)
class TableRows:
    """One state table's share of a partition."""

    table: str
    rows: int
    #: operations queued, active or paused; jobs pending or running
    unfinished: int


@dataclass(frozen=True)
class PartitionInfo:
    number: int
    state: PartitionState
    opened_at: datetime.datetime
    #: when the next partition opened (None for the current one)
    closed_at: datetime.datetime | None
    #: how long it has been open (until now, on the library's clock)
    age: datetime.timedelta
    #: from when it may be dropped (closed_at + retention_days), None for the current one
    retire_after: datetime.datetime | None
    tables: tuple[TableRows, ...]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def unfinished(self) -> int:
        return sum(t.unfinished for t in self.tables)


def list_partitions(database: str = "main") -> list[PartitionInfo]:
    """Every partition of ``database`` not dropped yet, oldest first (the last is current)."""
    retention = datetime.timedelta(days=float(REGISTRY.settings.retention_days))
    with REGISTRY.connection(database) as conn:
        entries = register(conn)
        attachments = {parent.name: attached(conn, parent) for parent in PARENTS}
        return [
            _info(conn, entry, entry is entries[-1], retention, attachments) for entry in entries
        ]


def _info(
    conn: psycopg.Connection[Any],
    entry: Registered,
    is_current: bool,
    retention: datetime.timedelta,
    attachments: dict[str, dict[int, bool]],
) -> PartitionInfo:
    tables = tuple(_rows(conn, parent, entry.number) for parent in PARENTS)
    detached = any(
        entry.number not in attachments[parent.name] or attachments[parent.name][entry.number]
        for parent in PARENTS
    )
    if is_current:
        state = PartitionState.CURRENT
    elif detached:
        state = PartitionState.DETACHED
    elif not retention_passed(entry, retention):
        state = PartitionState.OLDER
    elif any(t.unfinished for t in tables):
        state = PartitionState.HELD
    else:
        state = PartitionState.DETACHABLE
    return PartitionInfo(
        number=entry.number,
        state=state,
        opened_at=entry.opened_at,
        closed_at=entry.closed_at,
        age=entry.now - entry.opened_at,
        retire_after=None if entry.closed_at is None else entry.closed_at + retention,
        tables=tables,
    )


def _rows(conn: psycopg.Connection[Any], parent: Parent, number: int) -> TableRows:
    """Through the parent: what the application sees (a detached table counts none), with
    the privileges the application has."""
    statement = query("partitions_row_counts", parent=parent.identifier)
    row = conn.execute(statement, {"number": number, "operations": parent.operations}).fetchone()
    total, unfinished = row if row else (0, 0)
    return TableRows(parent.name, int(total), int(unfinished))
