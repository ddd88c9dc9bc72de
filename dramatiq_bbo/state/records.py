"""Plain, immutable snapshots of an operation and a job, as the public API returns them.

Callers get these rather than live model instances so that reading an operation never holds a
connection or a lock, and so the shape stays stable whatever the storage layer does.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from ..walk.catalog import TableRef, display_name, split_table_name


class OperationStatus(enum.IntEnum):
    QUEUED = 0
    ACTIVE = 1
    PAUSED = 2
    FINISHED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def unfinished(self) -> bool:
        return self in UNFINISHED

    # Not a member: the statuses the partial unique index guards (``WHERE status IN (0, 1, 2)``).
    UNFINISHED: ClassVar[frozenset[OperationStatus]]


class JobStatus(enum.IntEnum):
    PENDING = 0
    RUNNING = 1
    FAILED = 2
    SUCCEEDED = 3


UNFINISHED = frozenset({OperationStatus.QUEUED, OperationStatus.ACTIVE, OperationStatus.PAUSED})
OperationStatus.UNFINISHED = UNFINISHED

OperationId = int | uuid.UUID


@dataclass(frozen=True)
class OperationRecord:
    """One operation row, either scope. ``organization_id is None`` means cell-local."""

    id: OperationId
    partition: int
    job_class_name: str
    table_name: str
    column_name: str
    cursor_columns: tuple[str, ...]
    job_arguments: Any
    database_name: str
    status: OperationStatus
    priority: int
    batch_size: int
    sub_batch_size: int
    min_batch_size: int
    max_batch_size: int
    pause_ms: int
    interval_seconds: float
    min_cursor: list[Any]
    max_cursor: list[Any] | None
    next_cursor: list[Any] | None
    total_tuple_count: int | None
    processed_tuple_count: int
    affected_tuple_count: int
    on_hold_until: datetime | None
    hold_reason: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_run_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    organization_id: int | None = None
    user_id: int | None = None
    #: the table's schema, as the catalog spells it (``table_name`` is the bare name);
    #: None only on records built by hand from a ``"schema.table"`` text
    table_schema: str | None = None
    #: the table's oid when enqueue validated it (checked again before each job)
    table_oid: int | None = None

    @property
    def table_ref(self) -> TableRef:
        """The table this operation runs on: schema, bare name and validated oid, exactly
        as stored (a hand-built record without ``table_schema`` has its text split)."""
        if self.table_schema is None:
            schema, name = split_table_name(self.table_name)
            return TableRef(schema or "public", name, self.table_oid)
        return TableRef(self.table_schema, self.table_name, self.table_oid)

    @property
    def table_display(self) -> str:
        """``schema.table``, quoted where SQL would need it: for messages and logs."""
        return display_name(self.table_ref.schema, self.table_ref.name)

    @property
    def organization_scoped(self) -> bool:
        return self.organization_id is not None

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    @property
    def identifier(self) -> str:
        """``Class/table.column``: the label logs and metrics use."""
        return f"{self.job_class_name}/{self.table_display}.{self.column_name}"

    @property
    def progress(self) -> float | None:
        """Processed ÷ estimated tuples, in [0, 1]; None when there is no estimate."""
        if self.status == OperationStatus.FINISHED:
            return 1.0
        if not self.total_tuple_count:
            return None
        return min(1.0, self.processed_tuple_count / self.total_tuple_count)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OperationRecord:
        return cls(**_pick(cls, row, status=OperationStatus(row["status"])))


@dataclass(frozen=True)
class JobRecord:
    """One job row: a keyset batch ``[min_cursor, max_cursor]`` of one operation."""

    id: OperationId
    partition: int
    worker_id: OperationId
    worker_partition: int
    status: JobStatus
    attempts: int
    batch_size: int
    sub_batch_size: int
    pause_ms: int
    min_cursor: list[Any]
    max_cursor: list[Any]
    checkpoint_cursor: list[Any] | None
    processed_tuple_count: int
    affected_tuple_count: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    metrics: dict[str, Any]
    exception_class: str | None
    exception_message: str | None
    created_at: datetime
    updated_at: datetime
    organization_id: int | None = None
    #: runs ended by a worker shutdown or an expired lease (not failed attempts)
    interruptions: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        return cls(
            **_pick(
                cls,
                row,
                status=JobStatus(row["status"]),
                interruptions=int(row.get("interruptions") or 0),
            )
        )


def _pick(cls: type, row: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    values = {f.name: row.get(f.name) for f in fields(cls)}
    if "cursor_columns" in values and values["cursor_columns"] is not None:
        values["cursor_columns"] = tuple(values["cursor_columns"])
    values.update(overrides)
    return values
