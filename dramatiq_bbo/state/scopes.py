"""Which scope an operation id belongs to, and so which tables hold its rows.

The id says the scope: an ``int`` is a cell-local operation (bigint identity), a
:class:`uuid.UUID` (or its string) an organization-scoped one. Nothing here touches the
database, so the modules that only need a table name (the stage handoff, the argument
parsers of the operator commands) stand low, on the records alone;
:mod:`dramatiq_bbo.state.store` reads the rows and re-exports these names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ..errors import InvalidOperationId
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
