"""Which tables an operation may run on: never the library's own, the broker's or the
system catalogs, only those its class declares, and only those the role may read.

Refused schemas. ``bbo`` (the operations' state), ``dramatiq`` (the broker's queue: a delete
operation there would drop pending messages), ``pg_catalog``, ``information_schema``,
``pg_toast`` and the temporary schemas (``pg_temp_N``, ``pg_toast_temp_N``: a worker's session
could not see another session's temporary table anyway). The check runs on the schema the
catalog resolved, so neither a search_path nor a quoted spelling gets around it.

Declared tables. A class may set ``tables = ("todos", "archive.todos")``: enqueue (and so a
cron firing) then refuses any other table. An unqualified entry means the table it resolves
to through the search_path of enqueue's connection, as the enqueued name itself would;
entries are compared by oid, so two spellings of one table match and look-alikes do not.
``schedule()`` applies the same rule to the names it can compare without a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..errors import (
    OperationDefinitionError,
    TableNotAllowed,
    TableNotFound,
    TablePrivilegeMissing,
    ValidationError,
)
from ..queries import query
from ..walk.catalog import TableInfo, check_identifier, display_name, split_table_name

#: schemas no operation may run in, with the reason given
REFUSED_SCHEMAS = {
    "bbo": "it holds dramatiq-bbo's own operation and job tables",
    "dramatiq": "it holds the broker's message queue",
    "pg_catalog": "it is the system catalog",
    "information_schema": "it is the SQL-standard system catalog",
    "pg_toast": "it holds TOAST storage",
}
_TEMPORARY_PREFIXES = ("pg_temp", "pg_toast_temp")
#: most tables one class may declare
MAX_DECLARED_TABLES = 100

Declared = tuple[tuple[str | None, str], ...]


def refusal(schema: str) -> str | None:
    """Why no operation may run in ``schema``, or None when it may."""
    if schema in REFUSED_SCHEMAS:
        return REFUSED_SCHEMAS[schema]
    if schema.startswith(_TEMPORARY_PREFIXES):
        return "it is a temporary schema, private to one session"
    return None


def declared_tables(cls_name: str, tables: Any) -> Declared:
    """A class's ``tables`` attribute as (schema or None, name) pairs, or
    OperationDefinitionError saying what is wrong with it (checked at class creation)."""
    if isinstance(tables, str | bytes) or not isinstance(tables, Sequence | frozenset | set):
        raise OperationDefinitionError(
            f"{cls_name}: tables must be a tuple of table names, e.g. ('todos',), got {tables!r}"
        )
    entries = list(tables)
    if not 1 <= len(entries) <= MAX_DECLARED_TABLES:
        raise OperationDefinitionError(
            f"{cls_name}: tables must name 1..{MAX_DECLARED_TABLES} tables, got {len(entries)}"
        )
    pairs: list[tuple[str | None, str]] = []
    for entry in entries:
        try:
            schema, name = split_table_name(entry)
        except ValidationError as exc:
            raise OperationDefinitionError(f"{cls_name}: tables entry {entry!r}: {exc}") from None
        if schema is not None and refusal(schema):
            raise OperationDefinitionError(
                f"{cls_name}: tables entry {entry!r} is in schema {schema!r}, where no "
                f"operation may run: {refusal(schema)}"
            )
        pairs.append((schema, name))
    return tuple(pairs)


def check_name_allowed(cls: Any, table_name: str) -> None:
    """What ``schedule()`` can check without a database: the name's own schema, and that
    it can match one of the class's declared tables."""
    schema, name = split_table_name(table_name)
    if schema is not None and refusal(schema):
        raise TableNotAllowed(_refused_message(display_name(schema, name), schema))
    declared: Declared | None = getattr(cls, "_declared_tables", None)
    if declared is None:
        return
    for entry_schema, entry_name in declared:
        if entry_name == name and (schema is None or entry_schema in (None, schema)):
            return
    raise TableNotAllowed(_outside_message(cls, display_name(schema, name)))


def check_table_allowed(conn: psycopg.Connection[Any], cls: Any, table: TableInfo) -> None:
    """The resolved ``table`` is in no refused schema and among the class's tables."""
    if refusal(table.schema):
        raise TableNotAllowed(_refused_message(table.display, table.schema))
    declared: Declared | None = getattr(cls, "_declared_tables", None)
    if declared is None:
        return
    with conn.cursor() as cur:
        rows = cur.execute(
            query("catalog_resolve_names"),
            {"schemas": [s for s, _ in declared], "names": [n for _, n in declared]},
        ).fetchall()
    if table.oid not in {row[0] for row in rows}:
        raise TableNotAllowed(_outside_message(cls, table.display))


def check_model_table(conn: psycopg.Connection[Any], cls: Any, table: TableInfo) -> None:
    """A class bringing its own ``model`` runs its sub-batches on that model's table: it
    must be the table the operation is enqueued on, or the run would touch another one."""
    model = getattr(cls, "model", None)
    if model is None:
        return
    meta = model._meta
    with conn.cursor() as cur:
        row = cur.execute(
            query("catalog_resolve_names"),
            {"schemas": [meta.schema], "names": [meta.table_name]},
        ).fetchone()
    if row is None or row[0] != table.oid:
        raise OperationDefinitionError(
            f"{cls.__name__}.model ({model.__name__}) is bound to table "
            f"{display_name(meta.schema, meta.table_name)}, not to {table.display} the "
            "operation is enqueued on; enqueue it on the model's table, or drop the model to "
            "have one reflected"
        )


def check_privileges(conn: psycopg.Connection[Any], table: TableInfo) -> None:
    """The role may use the table's schema and SELECT from the table (every batch reads
    it); the privileges ``perform()`` needs besides (DELETE, UPDATE...) depend on the class."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("catalog_table_privileges"), {"oid": table.oid}).fetchone()
    if row is None:
        raise TableNotFound(f"table {table.display} disappeared while enqueueing")
    schema = display_name(None, table.schema)
    if not row["schema_usage"]:
        raise TablePrivilegeMissing(
            f"role {row['role']!r} lacks USAGE on schema {schema}, so it cannot reach "
            f"{table.display}; GRANT USAGE ON SCHEMA {schema} TO {display_name(None, row['role'])}"
        )
    if not row["can_select"]:
        raise TablePrivilegeMissing(
            f"role {row['role']!r} lacks the SELECT privilege on {table.display}, which every "
            f"batch needs; GRANT SELECT ON {table.display} TO {display_name(None, row['role'])}"
        )


def privilege_error(exc: psycopg.Error, table: TableInfo) -> TablePrivilegeMissing:
    """A permission error Postgres raised while enqueue read ``table`` (e.g. a column
    privilege, or a table the scope joins), as a typed error naming what was refused."""
    detail = (getattr(exc.diag, "message_primary", None) or str(exc)).strip()
    return TablePrivilegeMissing(
        f"the role may not read what enqueue needs of {table.display}: {detail}; grant "
        "SELECT on it (and on the tables the class's scope() reads)"
    )


def _refused_message(display: str, schema: str) -> str:
    return f"table {display} is in schema {schema!r}, where no operation may run: {refusal(schema)}"


def _outside_message(cls: Any, display: str) -> str:
    allowed = ", ".join(repr(t) for t in cls.tables)
    return (
        f"{cls.__name__} may run only on the tables it declares ({cls.__name__}.tables = "
        f"({allowed})); {display} is not one of them"
    )


__all__ = [
    "REFUSED_SCHEMAS",
    "check_identifier",
    "check_model_table",
    "check_name_allowed",
    "check_privileges",
    "check_table_allowed",
    "declared_tables",
    "privilege_error",
    "refusal",
]
