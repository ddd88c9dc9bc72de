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
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidOperationId, OperationNotFound
from ..migrations import requires_schema
from ..queries import query
from .records import JobRecord, OperationId, OperationRecord


@dataclass(frozen=True)
class Scope:
    """One scope's tables, and the key columns its rows have that the other scope's lack
    (an organization's operations and jobs carry ``organization_id``). One statement serves
    both scopes: the tables are identifiers, and :meth:`columns` / :meth:`values` /
    :meth:`condition` write the key columns where the scope has them."""

    name: str
    operations_table: sql.Identifier
    jobs_table: sql.Identifier
    key_columns: tuple[str, ...] = ()

    @property
    def tables(self) -> tuple[sql.Identifier, sql.Identifier]:
        return self.operations_table, self.jobs_table

    def columns(self, *more: str) -> sql.Composable:
        """``, key_column, ...`` (nothing in a scope without them), for an INSERT's list."""
        names = (*self.key_columns, *more) if self.key_columns else ()
        return sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(n)) for n in names)

    def values(self, *more: str) -> sql.Composable:
        """``, %(key_column)s, ...``: the parameters matching :meth:`columns`."""
        names = (*self.key_columns, *more) if self.key_columns else ()
        return sql.SQL("").join(sql.SQL(", {}").format(sql.Placeholder(n)) for n in names)

    def condition(self) -> sql.Composable:
        """``key_column = %(key_column)s AND ...``, or ``TRUE`` in a scope without them."""
        tests = [
            sql.SQL("{} = {}").format(sql.Identifier(n), sql.Placeholder(n))
            for n in self.key_columns
        ]
        return sql.SQL(" AND ").join(tests) if tests else sql.SQL("TRUE")


CELL_LOCAL = Scope(
    "cell_local",
    sql.Identifier("bbo", "background_operation_workers_cell_local"),
    sql.Identifier("bbo", "background_operation_jobs_cell_local"),
)
ORGANIZATION = Scope(
    "organization",
    sql.Identifier("bbo", "background_operation_workers"),
    sql.Identifier("bbo", "background_operation_jobs"),
    key_columns=("organization_id",),
)
#: (operations table, jobs table) of each scope
CELL_LOCAL_TABLES = CELL_LOCAL.tables
ORGANIZATION_TABLES = ORGANIZATION.tables

_BIGINT = range(-(2**63), 2**63)


def parse_operation_id(value: Any) -> OperationId:
    """An operation id from what a caller (or the CLI) holds: int, UUID, or their strings
    (or an :class:`OperationRef`, already parsed)."""
    if isinstance(value, OperationRef):
        return value.id
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _BIGINT:
            raise InvalidOperationId(f"operation id {value!r} is out of the bigint range")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdecimal() and len(text) <= 19:
            return parse_operation_id(int(text))
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
    raise InvalidOperationId(
        f"{value!r} is not an operation id: expected an int (cell-local operation) or a uuid "
        "(organization-scoped operation)"
    )


@dataclass(frozen=True)
class OperationRef:
    """An operation as a stage message names it: its database and id, parsed once (by
    :func:`operation_ref`), and so its scope and tables."""

    database: str
    id: OperationId
    scope: Scope

    @property
    def operations_table(self) -> sql.Identifier:
        return self.scope.operations_table

    @property
    def jobs_table(self) -> sql.Identifier:
        return self.scope.jobs_table

    def __str__(self) -> str:
        return str(self.id)


def operation_ref(database: str, operation_id: Any) -> OperationRef:
    """The message's ``(database, operation id)`` as one value (InvalidOperationId if the
    id is neither a bigint nor a uuid)."""
    key = parse_operation_id(operation_id)
    return OperationRef(database, key, scope_of(key))


def scope_of(operation: OperationId | str | OperationRecord | JobRecord | OperationRef) -> Scope:
    """The scope ``operation`` (an id, a record or a reference) belongs to."""
    if isinstance(operation, OperationRef):
        return operation.scope
    if isinstance(operation, OperationRecord | JobRecord):
        scoped = operation.organization_id is not None
    else:
        scoped = isinstance(parse_operation_id(operation), uuid.UUID)
    return ORGANIZATION if scoped else CELL_LOCAL


def tables_for(
    operation: OperationId | str | OperationRecord | JobRecord | OperationRef,
) -> tuple[sql.Identifier, sql.Identifier]:
    """``(operations table, jobs table)`` of the scope ``operation`` (an id, a record or a
    reference) belongs to, ready for :func:`dramatiq_bbo.queries.query` or ``sql.SQL.format``."""
    return scope_of(operation).tables


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
) -> psycopg.Cursor[dict[str, Any]]:
    """Insert a pending job of ``operation`` over the inclusive keyset ``range_`` (its row is
    on the returned cursor, not fetched yet: a pipelined caller fetches it when it needs it).
    One statement serves both scopes; an organization's job also gets its organization_id."""
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
