"""Reading operations and their jobs by id, whichever scope they belong to.

The id says the scope: an ``int`` is a cell-local operation (bigint identity), a
:class:`uuid.UUID` (or its string) an organization-scoped one. Rows are read from the parent
(partitioned) tables, so an operation is found whatever partition it lives in. Results are
immutable :class:`~dramatiq_bbo.state.records.OperationRecord` / ``JobRecord`` snapshots: reading
never leaves a connection or a lock behind.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import OperationNotFound
from ..migrations import requires_schema
from ..queries import query
from .records import JobRecord, OperationId, OperationRecord
from .scopes import (
    CELL_LOCAL,
    CELL_LOCAL_TABLES,
    ORGANIZATION,
    ORGANIZATION_TABLES,
    OperationRef,
    Scope,
    operation_ref,
    parse_operation_id,
    scope_of,
    tables_for,
)

__all__ = [  # the scope names, re-exported: callers read ids and rows from one place
    "CELL_LOCAL",
    "CELL_LOCAL_TABLES",
    "ORGANIZATION",
    "ORGANIZATION_TABLES",
    "OperationRef",
    "Scope",
    "operation_ref",
    "parse_operation_id",
    "scope_of",
    "tables_for",
]


def fetch_operation(
    conn: psycopg.Connection[Any], operation_id: Any, *, for_update: bool = False
) -> OperationRecord | None:
    """The operation on ``conn`` (None if absent). ``for_update`` locks its row until the
    caller's transaction ends, for code that changes its state."""
    key = parse_operation_id(operation_id)
    operations, jobs = tables_for(key)
    name = "operation_by_id_for_update" if for_update else "operation_by_id"
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query(name, operations=operations, jobs=jobs), {"id": key}).fetchone()
    return None if row is None else OperationRecord.from_row(row)


def insert_job(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    *,
    partition: int,
    batch_size: int,
    sub_batch_size: int,
    pause_ms: int,
    range_: tuple[Any, Any],
    metrics: dict[str, Any] | None = None,
    claim_for: str | None = None,
    lease_seconds: float = 0.0,
) -> psycopg.Cursor[dict[str, Any]]:
    """Insert a pending job of ``operation`` over the inclusive keyset ``range_`` (its row is
    on the returned cursor, not fetched yet: a pipelined caller fetches it when it needs it).
    One statement serves both scopes; an organization's job also gets its organization_id.

    ``claim_for``: a lease owner that holds the new job at once (running, one attempt, a lease
    of ``lease_seconds``), so a creator about to run it needs no claim of its own; the caller
    holds the operation's row lock and checked that no other job of it runs."""
    scope = scope_of(operation)
    params = {
        "partition": partition,
        "organization_id": operation.organization_id,
        "worker_id": operation.id,
        "worker_partition": operation.partition,
        "batch_size": batch_size,
        "sub_batch_size": sub_batch_size,
        "pause_ms": pause_ms,
        "min_cursor": json.dumps(range_[0]),
        "max_cursor": json.dumps(range_[1]),
        "metrics": json.dumps(metrics or {}),
        "lease_owner": claim_for,
        "lease_seconds": lease_seconds,
    }
    statement = query(
        "execution_insert_job",
        jobs=scope.jobs_table,
        scope_columns=scope.columns(),
        scope_values=scope.values(),
    )
    return conn.cursor(row_factory=dict_row).execute(statement, params)


def hold_operation(
    conn: psycopg.Connection[Any], operation: OperationRecord, *, seconds: float, reason: str
) -> datetime.datetime | None:
    """Hold ``operation`` for ``seconds`` with ``reason`` (cut to the column's 1000
    characters); the hold's end, or None when the row is gone."""
    operations, _ = tables_for(operation)
    where = {"partition": operation.partition, "id": operation.id}
    row = conn.execute(
        query("operation_hold", operations=operations),
        {"seconds": seconds, "reason": reason, **where},
    ).fetchone()
    return row[0] if row else None


@requires_schema
def get_operation(operation_id: Any, *, database: str | None = None) -> OperationRecord:
    """The operation ``operation_id`` in ``database`` (default ``"main"``)."""
    key = parse_operation_id(operation_id)
    name = database or DEFAULT_DATABASE
    with REGISTRY.connection(name) as conn:
        record = fetch_operation(conn, key)
    if record is None:
        raise OperationNotFound(f"no operation {str(key)!r} in database {name!r}")
    return record


def list_jobs(
    operation: OperationId | str | OperationRecord, *, database: str | None = None
) -> list[JobRecord]:
    """The jobs of an operation, oldest first (pass the record to use its own database).

    Jobs in dropped partitions are gone on purpose: the operation row keeps the cursor.
    """
    if isinstance(operation, OperationRecord):
        key: OperationId = operation.id
        name = database or operation.database_name
    else:
        key = parse_operation_id(operation)
        name = database or DEFAULT_DATABASE
    operations, jobs = tables_for(key)
    with REGISTRY.connection(name) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                query("operation_jobs", operations=operations, jobs=jobs), {"id": key}
            ).fetchall()
        if not rows and fetch_operation(conn, key) is None:
            raise OperationNotFound(f"no operation {str(key)!r} in database {name!r}")
    return [JobRecord.from_row(row) for row in rows]
