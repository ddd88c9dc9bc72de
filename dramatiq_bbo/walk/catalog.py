"""What the Postgres catalog says about an operation's target table, checked before enqueue.

An operation walks its table in keyset order, so enqueue refuses a table or cursor that would
make that walk wrong or slow: the table must be an ordinary or partitioned table, the cursor
columns must exist, be NOT NULL, lead a valid btree index in order, and be unique together.

Names. A table is named ``"table"`` (resolved through the connection's ``search_path``, as
Postgres would) or ``"schema.table"``. Each part is taken literally — ``"TodoItems"`` is the
table whose name is exactly ``TodoItems`` — and may also be written double-quoted, SQL
style; a part holding a dot, or starting with a double quote, must be (``'"dot.ted"'``; the
table named ``"todos"``, quotes included, is written with each quote doubled inside a pair
of quotes). A part is at
most 63 bytes (Postgres would silently truncate a longer one to another name) and holds no
NUL or lone surrogate. Once resolved, a table is kept as what the catalog says — its schema,
its bare name and its oid (:class:`TableRef`) — and stored that way on the operation row:
never as text parsed again, so the table that runs is the one validated. Every identifier
reaches SQL through :class:`psycopg.sql.Identifier`, every value as a parameter.

Cursors. A cursor is a JSON array of the cursor columns' values, in cursor order, stored in
``jsonb`` (``min_cursor``, ``max_cursor``, ``next_cursor``, job checkpoints). Ints, strings,
booleans and floats are kept; ``uuid``, ``numeric`` and ``bytea`` become strings, dates and
times ISO 8601 strings. To compare a stored cursor with the table, cast each element back to
its column type: ``(a, b) > (%s::<type of a>, %s::<type of b>)`` with
:attr:`ColumnInfo.type_name` (see :func:`cursor_casts`).
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..errors import (
    ColumnNotFound,
    CursorNotIndexed,
    InvalidIdentifier,
    TableChanged,
    TableNotFound,
)
from ..queries import query

_TABLE_KINDS = {"r": "table", "p": "partitioned table"}
_OTHER_KINDS = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "a partitioned index",
    "c": "a composite type",
    "t": "a TOAST table",
}
_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


@dataclass(frozen=True)
class ColumnInfo:
    """One live column: its SQL type as ``format_type`` spells it (usable in a cast)."""

    name: str
    type_name: str
    not_null: bool
    attnum: int


class TableRef(NamedTuple):
    """A table as stored on an operation row: the catalog's schema and bare name, and the
    oid it had when enqueue validated it (None on rows older than the oid column)."""

    schema: str
    name: str
    oid: int | None = None


@dataclass(frozen=True)
class TableInfo:
    """A resolved target table."""

    schema: str
    name: str
    oid: int
    kind: str  # "table" or "partitioned table"
    columns: dict[str, ColumnInfo] = field(hash=False)

    @property
    def ref(self) -> TableRef:
        """What the operation row stores: schema, bare name and oid, never re-parsed."""
        return TableRef(self.schema, self.name, self.oid)

    @property
    def display(self) -> str:
        """``schema.table`` quoted like SQL would need it, for messages."""
        return display_name(self.schema, self.name)

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


def quote_ident(name: str) -> str:
    """Quote ``name`` for display when SQL would need quotes (keywords aside)."""
    if _PLAIN_IDENTIFIER.match(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def display_name(schema: str | None, name: str) -> str:
    """``schema.table`` quoted like SQL would need it (``name`` alone without a schema)."""
    return quote_ident(name) if schema is None else f"{quote_ident(schema)}.{quote_ident(name)}"


def check_identifier(value: Any, what: str) -> str:
    """``value`` if Postgres can hold it as an identifier exactly, else InvalidIdentifier:
    a string of 1..63 bytes in UTF-8 (a longer one would be truncated to another name),
    without NUL (text cannot hold it), lone surrogates (not encodable) or '%' (a placeholder
    to the driver)."""
    if not isinstance(value, str) or not value:
        raise InvalidIdentifier(f"{what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise InvalidIdentifier(f"{what} {value!r} holds a NUL character")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidIdentifier(f"{what} {value!r} holds a lone surrogate") from None
    if "%" in value:
        raise InvalidIdentifier(
            f"{what} {value!r} holds a '%': the driver reads '%' in a statement as a parameter "
            "placeholder, so such a name could reach Postgres as another name; rename it"
        )
    if size > 63:
        raise InvalidIdentifier(
            f"{what} {value!r} is {size} bytes long; Postgres identifiers are at most 63 "
            "bytes (a longer name would be truncated to another one)"
        )
    return value


def split_table_name(table_name: Any) -> tuple[str | None, str]:
    """``"t"`` → (None, "t"); ``"s.t"`` → ("s", "t"); parts may be double-quoted."""
    if not isinstance(table_name, str) or not table_name or len(table_name) > 200:
        raise TableNotFound(f"table name must be a non-empty string, got {table_name!r}")
    if "\x00" in table_name:
        raise InvalidIdentifier(f"table name {table_name!r} holds a NUL character")
    parts: list[str] = []
    rest = table_name
    while True:
        if rest.startswith('"'):
            match = re.match(r'"((?:[^"]|"")+)"', rest)
            if match is None:
                raise TableNotFound(f"unbalanced quotes in table name {table_name!r}")
            parts.append(match.group(1).replace('""', '"'))
            rest = rest[match.end() :]
        else:
            part, dot, after = rest.partition(".")
            parts.append(part)
            rest = dot + after
        if not rest:
            break
        if not rest.startswith(".") or len(parts) == 2:
            raise TableNotFound(
                f"table name {table_name!r} must be 'table' or 'schema.table'; double-quote "
                "a part that contains a dot"
            )
        rest = rest[1:]
    if any(not part for part in parts):
        raise TableNotFound(f"table name {table_name!r} has an empty part")
    for part in parts:
        check_identifier(part, f"table name {table_name!r}: part")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def resolve_table(conn: psycopg.Connection[Any], table_name: str) -> TableInfo:
    """The ordinary or partitioned table ``table_name`` names, with its columns."""
    schema, name = split_table_name(table_name)
    return _resolve(conn, schema, name, table_name)


def resolve_stored(conn: psycopg.Connection[Any], ref: TableRef) -> TableInfo:
    """The table an operation row stores, looked up by its exact schema and name (no
    parsing, no search_path); TableChanged when it is no longer the table enqueue validated
    (its oid differs: dropped and re-created, or another table renamed into its place)."""
    info = _resolve(conn, ref.schema, ref.name, display_name(ref.schema, ref.name))
    if ref.oid is not None and info.oid != ref.oid:
        raise TableChanged(
            f"table {info.display} is not the table this operation was enqueued on (oid "
            f"{info.oid}, the operation was validated on oid {ref.oid}): it was dropped and "
            "re-created, or another table took its name; cancel the operation and enqueue it "
            "again if the new table is the intended one"
        )
    return info


def _resolve(
    conn: psycopg.Connection[Any], schema: str | None, name: str, table_name: str
) -> TableInfo:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("catalog_resolve_table"), {"schema": schema, "name": name}
        ).fetchone()
        if row is None:
            where = "in the search_path" if schema is None else f"in schema {schema!r}"
            raise TableNotFound(
                f"table {table_name!r} does not exist {where}; create it, or name it as "
                "'schema.table'"
            )
        if row["relkind"] not in _TABLE_KINDS:
            kind = _OTHER_KINDS.get(row["relkind"], f"a relation of kind {row['relkind']!r}")
            raise TableNotFound(
                f"{table_name!r} is {kind}, not a table; an operation walks an ordinary or "
                "partitioned table"
            )
        columns = cur.execute(query("catalog_table_columns"), {"oid": row["oid"]}).fetchall()
    return TableInfo(
        schema=row["schema"],
        name=row["name"],
        oid=row["oid"],
        kind=_TABLE_KINDS[row["relkind"]],
        columns={c["name"]: ColumnInfo(**c) for c in columns},
    )


def validate_cursor(
    conn: psycopg.Connection[Any], table: TableInfo, cursor_columns: Sequence[str]
) -> None:
    """Refuse cursor columns a keyset walk cannot rely on, saying why and what to add.

    NOT NULL, because a row comparison never matches a NULL and those rows would be skipped
    silently; a btree index led by the columns in order, or every batch is a sequential scan;
    unique together, or a batch boundary could split rows sharing one cursor value.
    """
    columns = list(cursor_columns)
    for column in columns:
        if column not in table.columns:
            raise ColumnNotFound(
                f"column {column!r} does not exist on table {table.display}; its columns are: "
                f"{', '.join(table.columns) or '(none)'}"
            )
    listed = ", ".join(quote_ident(c) for c in columns)
    for column in columns:
        if not table.columns[column].not_null:
            raise CursorNotIndexed(
                f"cursor column {column!r} of {table.display} is nullable: rows where it is "
                "NULL would be skipped silently by the keyset walk; add "
                f"ALTER TABLE {table.display} ALTER COLUMN {quote_ident(column)} SET NOT NULL"
            )
    attnums = [table.columns[c].attnum for c in columns]
    with conn.cursor(row_factory=dict_row) as cur:
        indexes = cur.execute(query("catalog_table_indexes"), {"oid": table.oid}).fetchall()
    usable = [i for i in indexes if i["is_valid"] and i["is_total"] and i["is_plain"]]
    leading = [i for i in usable if i["method"] == "btree" and _leads(i, attnums)]
    unique = [
        i for i in usable if i["is_unique"] and set(i["keys"][: i["key_count"]]) <= set(attnums)
    ]
    if not leading:
        statement = (
            "CREATE UNIQUE INDEX CONCURRENTLY" if not unique else "CREATE INDEX CONCURRENTLY"
        )
        raise CursorNotIndexed(
            f"cursor ({listed}) of {table.display} does not lead any valid, non-partial btree "
            f"index in that order, so every batch would scan the table; add "
            f"{statement} ON {table.display} ({listed})"
        )
    if not unique:
        raise CursorNotIndexed(
            f"cursor ({listed}) of {table.display} is not unique: no valid, non-partial unique "
            "index or primary key has key columns among them, so a batch boundary could split "
            f"rows sharing a value; add CREATE UNIQUE INDEX CONCURRENTLY ON {table.display} "
            f"({listed}), or use a unique cursor such as the primary key"
        )


def _leads(index: dict[str, Any], attnums: list[int]) -> bool:
    """The index's leading key columns are ``attnums`` in order, all in one direction
    (a row comparison needs a uniform ASC or DESC index to scan it as one range)."""
    keys = index["keys"][: index["key_count"]]
    if list(keys[: len(attnums)]) != attnums:
        return False
    directions = {option & 1 for option in index["options"][: len(attnums)]}
    return len(directions) == 1


def estimate_tuples(conn: psycopg.Connection[Any], table: TableInfo) -> int | None:
    """Rows in the table per ``pg_class.reltuples`` (leaf partitions summed), or None when
    never analysed: an estimate, free to read, as good as the last (auto)analyze."""
    row = conn.execute(query("catalog_estimate_tuples"), {"oid": table.oid}).fetchone()
    if row is None or not row[1]:
        return None
    return int(round(row[0]))


def estimate_query_rows(
    conn: psycopg.Connection[Any], text: str, params: Sequence[Any]
) -> int | None:
    """The planner's row estimate for the query ``text`` (EXPLAIN, never run): the size of a
    scoped walk, where the table's reltuples would count every row of the table. None when
    it cannot be planned (an estimate must never fail its caller)."""
    explain = sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(text)  # type: ignore[arg-type]
    try:
        with conn.transaction(force_rollback=True):
            row = conn.execute(explain, params).fetchone()
    except psycopg.Error:
        return None
    plan = row[0] if row is not None else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    if not plan:
        return None
    try:
        return max(0, int(plan[0]["Plan"]["Plan Rows"]))
    except (TypeError, LookupError, ValueError):
        return None


def cursor_bounds(
    conn: psycopg.Connection[Any],
    table: TableInfo,
    cursor_columns: Sequence[str],
    where: sql.Composable | None = None,
    params: Sequence[Any] = (),
    *,
    relation: sql.Composable | None = None,
) -> tuple[list[Any], list[Any]] | None:
    """The smallest and largest cursor (JSON-friendly lists), or None when no row matches.

    ``where`` is an extra condition (``params`` fill its placeholders); ``relation`` replaces
    the table in ``FROM`` (e.g. ``(<a scoped subquery>) AS scoped``), its placeholders first in
    ``params``. Each bound is one ``ORDER BY ... LIMIT 1`` over the cursor index.
    """
    columns = [sql.Identifier(c) for c in cursor_columns]
    source = relation if relation is not None else table.identifier
    condition = sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL("")
    bounds = []
    for direction in (sql.SQL("ASC"), sql.SQL("DESC")):
        statement = sql.SQL("SELECT {} FROM {}{} ORDER BY {} LIMIT 1").format(
            sql.SQL(", ").join(columns),
            source,
            condition,
            sql.SQL(", ").join(sql.SQL("{} {}").format(c, direction) for c in columns),
        )
        row = conn.execute(statement, list(params)).fetchone()
        if row is None:
            return None
        bounds.append(json_values(row))
    return bounds[0], bounds[1]


def json_values(values: Sequence[Any]) -> list[Any]:
    """Column values as a JSON-friendly cursor (see the module docstring)."""
    return [json_value(v) for v in values]


def json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds()} seconds"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    return str(value)


def cursor_casts(table: TableInfo, cursor_columns: Sequence[str]) -> sql.Composed:
    """``(%s::type_a, %s::type_b)``: a stored cursor as a row comparable with the columns."""
    return sql.SQL("({})").format(
        sql.SQL(", ").join(
            sql.SQL("%s::") + sql.SQL(table.columns[c].type_name)  # type: ignore[arg-type]
            for c in cursor_columns
        )
    )
