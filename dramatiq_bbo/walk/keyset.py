"""The keyset strategy: which rows a job covers, and where to split a range.

A *keyset* is the walk over one table: the cursor columns in order, their SQL types and the
operation's ``scope``. Cursors are stored as JSON arrays (see :mod:`dramatiq_bbo.walk.catalog`), so
every comparison casts each stored value back to its column's type — ``("a", "b") >
(CAST(%s AS integer), CAST(%s AS uuid))`` — or a uuid or timestamp cursor would compare as
text. Row comparisons over the leading columns of the cursor index are what Postgres scans as
one index range; the scope narrows the walk inside it (index the scope too, e.g.
``(user_id, partition_id, id)``, or the walk reads every row of the range to find the scoped
ones).

Bounds are inclusive: a job covers ``[min_cursor, max_cursor]``, its first and last row in
keyset order. The operation's ``next_cursor`` is the exclusive lower bound of what no job has
been given yet; a job's ``checkpoint_cursor`` is the last row of its last committed sub-batch.

The sub-batch walk (one transaction per sub-batch, checkpoint included) is
:mod:`dramatiq_bbo.walk.checkpoint`, which re-exports this module's public functions.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import peewee
import psycopg
from psycopg import sql

from ..errors import OperationDefinitionError, TableNotFound
from .catalog import TableInfo, json_values
from .statements import Compiled, slots

Cursor = list[Any]  # a stored cursor: JSON values in cursor-column order
Range = tuple[Cursor, Cursor]  # inclusive (first, last)


def _as_is(value: Any) -> Any:
    return value


class Keyset:
    """The keyset walk over one table, shared by job creation, splitting and sub-batches."""

    def __init__(
        self,
        model: Any,
        cursor_columns: Sequence[str],
        type_names: Sequence[str],
        scope: Callable[[Any], Any] | None = None,
    ) -> None:
        self.model = model
        self.columns = tuple(cursor_columns)
        self.fields = [column_field(model, column) for column in self.columns]
        self.type_names = tuple(type_names)
        self._scope = scope
        self._scope_where: Any = None
        self._scope_checked = False
        self._statements: dict[Any, Any] | None = None

    @classmethod
    def for_operation(
        cls,
        operation: Any,
        table: TableInfo,
        cursor_columns: Sequence[str],
        scope: Callable[[Any], Any] | None,
    ) -> Keyset:
        """The keyset of an operation instance (its ``table`` model), narrowed by ``scope``
        (None when the class keeps the default, unnarrowed walk)."""
        types = [table.columns[column].type_name for column in cursor_columns]
        return cls(operation.table, cursor_columns, types, scope)

    # -- expressions ---------------------------------------------------------------------------
    @property
    def composite(self) -> bool:
        return len(self.fields) > 1

    def key(self) -> Any:
        """The cursor columns as one comparable expression."""
        return peewee.Tuple(*self.fields) if self.composite else self.fields[0]

    def row(self, cursor: Sequence[Any]) -> Any:
        """A stored cursor as a value comparable with :meth:`key`, cast to the column types."""
        if len(cursor) != len(self.fields):
            raise OperationDefinitionError(
                f"cursor {list(cursor)!r} has {len(cursor)} values, the keyset "
                f"{self.columns!r} has {len(self.fields)} columns"
            )
        # converter=_as_is: the value is cast in SQL, and must not go through the field's
        # own db_value (a text field would turn a compiled statement's Slot into "<Slot 0>")
        casts = [
            peewee.Cast(peewee.Value(value, converter=_as_is, unpack=False), type_name)
            for value, type_name in zip(cursor, self.type_names, strict=True)
        ]
        return peewee.Tuple(*casts) if self.composite else casts[0]

    def between(
        self, lower: Sequence[Any] | None, upper: Sequence[Any] | None, *, after: bool = False
    ) -> Any:
        """``lower <= key <= upper`` (``lower < key`` when ``after``); None bounds are open."""
        condition: Any = None
        if lower is not None and len(lower) > 0:
            condition = self.key() > self.row(lower) if after else self.key() >= self.row(lower)
        if upper is not None:
            upper_condition = self.key() <= self.row(upper)
            condition = upper_condition if condition is None else condition & upper_condition
        return condition

    def scoped(self, *fields: Any) -> Any:
        """``SELECT <fields or the cursor columns> FROM table`` narrowed by the scope."""
        query = self.model.select(*(fields or self.fields))
        if self._scope is None:
            return query
        scoped = self._scope(query)
        if not isinstance(scoped, peewee.SelectBase):
            raise OperationDefinitionError(
                f"scope() must return the query it was given, narrowed (query.where(...)); "
                f"it returned {scoped!r}"
            )
        return scoped

    def scope_condition(self, within: Any = None) -> Any:
        """The scope as a condition on the table's rows: the scoped query's ``WHERE`` when it
        has no join, else ``key IN (scoped query [WHERE within])``. None without a scope."""
        if self._scope is None:
            return None
        if not self._scope_checked:
            scoped = self.scoped()
            self._scope_where = None if scoped._joins else ("where", scoped._where)
            self._scope_checked = True
        if self._scope_where is not None:
            return self._scope_where[1]
        subquery = self.scoped()
        if within is not None:
            subquery = subquery.where(within)
        return self.key().in_(subquery)

    def ordered(self, query: Any, *, descending: bool = False) -> Any:
        return query.order_by(*[f.desc() if descending else f.asc() for f in self.fields])

    # -- statements compiled once per walk -----------------------------------------------------
    def compiled(self, key: Any, build: Callable[[], Any]) -> Compiled:
        """``build()`` (a peewee query with :class:`~dramatiq_bbo.walk.statements.Slot` values)
        compiled the first time ``key`` is asked for, then reused."""
        statements = self.statements()
        compiled = statements.get(key)
        if compiled is None:
            compiled = statements[key] = Compiled.of(build())
        return compiled  # type: ignore[no-any-return]

    def statements(self) -> dict[Any, Any]:
        """The compiled statements of this walk, shared by every job of the process walking
        the same table, columns and scope (the scoped query's SQL and parameters say which):
        the per-job Keyset is new, its statements are not rebuilt."""
        if self._statements is None:
            text, params = self.scoped().sql()
            key = (self.model, self.columns, self.type_names, text, repr(params))
            self._statements = _STATEMENTS.get(key)
        return self._statements

    def sub_batch_probes(self, *, after: bool) -> tuple[Compiled, Compiled, Compiled]:
        """Three statements that find the next sub-batch without reading its rows, compiled
        once per walk and variant (``after``: exclusive lower bound, i.e. a checkpoint):

        - *first*: its first row (``LIMIT 1``); *first* and *last* run inside the statement
          that locks the job row (``batching_begin_sub_batch``);
        - *last*: its ``limit``-th row (``OFFSET limit - 1 LIMIT 1``, the hand-written keyset
          loop's probe: the index only); when found, the sub-batch holds ``limit`` rows;
        - *tail*: when it is not (fewer rows left), the first and last rows of what is left,
          each with their count (``bbo_n``).

        Slots: ``lower`` (cursor), ``upper`` (cursor), then ``limit - 1`` (*last*) or
        ``limit`` (*tail*); *first* has the cursors only."""
        key = ("sub_batch", after)
        statements = self.statements()
        found = statements.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        width = len(self.fields)
        condition = self.between(slots(0, width), slots(width, width), after=after)
        (extra,) = slots(2 * width, 1)
        base = self.ordered(self.scoped().where(condition))
        first = Compiled.of(base.limit(1))
        last = Compiled.of(base.offset(extra).limit(1))
        names = [f"bbo_c{index}" for index in range(width)]
        inner = self.scoped(*[f.alias(n) for f, n in zip(self.fields, names, strict=True)])
        text, params = self.ordered(inner.where(condition)).limit(extra).sql()
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in names)
        statement = sql.SQL(
            "SELECT {columns}, bbo_n FROM (SELECT bbo_s.*,"
            " row_number() OVER (ORDER BY {columns}) AS bbo_rn, count(*) OVER () AS bbo_n"
            " FROM ({inner}) AS bbo_s) AS bbo_w WHERE bbo_rn = 1 OR bbo_rn = bbo_n ORDER BY bbo_rn"
        ).format(columns=columns, inner=sql.SQL(text))  # type: ignore[arg-type]
        tail = Compiled(statement.as_string(None), params)
        found = statements[key] = (first, last, tail)
        return found

    @property
    def unscoped(self) -> bool:
        """Whether the walk has no scope: its probes are plain index range scans, which a
        generic plan serves as well as a custom one (a scope's conditions may not)."""
        return self._scope is None

    def batch_probes(
        self, *, after: bool, bounded: bool = True
    ) -> tuple[Compiled, Compiled, Compiled]:
        """Three index probes for the next job's range, compiled once (see
        :func:`next_batch_bounds`): its first row, its ``OFFSET``-th row, and the last row of
        the range. Slots: ``lower`` (cursor, unless not ``bounded``), ``upper`` (cursor),
        ``offset``."""
        key = ("batch", after, bounded)
        statements = self.statements()
        found = statements.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        width = len(self.fields)
        lower = slots(0, width) if bounded else None
        upper = slots(width if bounded else 0, width)
        condition = self.between(lower, upper, after=after)
        (offset,) = slots((2 if bounded else 1) * width, 1)
        base = self.ordered(self.scoped().where(condition))
        tail = self.ordered(self.scoped().where(condition), descending=True)
        found = statements[key] = (
            Compiled.of(base.limit(1)),
            Compiled.of(base.offset(offset).limit(1)),
            Compiled.of(tail.limit(1)),
        )
        return found

    # -- execution on a given psycopg connection ---------------------------------------------
    def fetch(self, conn: psycopg.Connection[Any], query: Any) -> list[tuple[Any, ...]]:
        """Run a peewee query on ``conn`` (which may be a pooled connection, not peewee's)."""
        text, params = query.sql()
        return conn.execute(text, params).fetchall()

    def display(self, row: Sequence[Any]) -> Any:
        """A row's cursor as authors use it: a scalar for one column, else a tuple."""
        return tuple(row) if self.composite else row[0]


class _StatementCache:
    """A small LRU of compiled statements per walk (table, cursor, scope): a worker process
    sees many operations over time, each with its own scope arguments."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Any, dict[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> dict[Any, Any]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = {}
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return entry


#: compiled statements of the walks this process ran recently
_STATEMENTS = _StatementCache(256)


def next_batch_bounds(
    conn: psycopg.Connection[Any],
    keyset: Keyset,
    *,
    min_cursor: Cursor | None,
    max_cursor: Cursor | None,
    next_cursor: Cursor | None,
    batch_size: int,
) -> Range | None:
    """The next job's inclusive range: its first row is the first scoped row after
    ``next_cursor`` (or from ``min_cursor`` inclusive when no job exists yet), its last the
    ``batch_size``-th row from there, capped at ``max_cursor``, or the last row in range when
    fewer remain. None when no row remains: the operation's range is exhausted.

    Index probes, never a count: ``OFFSET batch_size - 1 LIMIT 1`` walks the index only; the
    last row of the range answers (one more probe) when fewer than ``batch_size`` rows remain.
    """
    if max_cursor is None:  # the table (or scope) was empty at enqueue
        return None
    lower = next_cursor if next_cursor is not None else min_cursor
    first_probe, offset_probe, tail_probe = keyset.batch_probes(
        after=next_cursor is not None, bounded=bool(lower)
    )
    cursors = [*(lower or []), *max_cursor]
    # both probes are sent before either is read: one round trip in a pipeline
    first = conn.execute(first_probe.text, first_probe.params([*cursors, 0]))
    last = conn.execute(offset_probe.text, offset_probe.params([*cursors, max(batch_size, 1) - 1]))
    first_row, last_row = first.fetchone(), last.fetchone()
    if first_row is None:
        return None
    if last_row is None:  # fewer than batch_size rows left: the range's last row ends it
        tail = conn.execute(tail_probe.text, tail_probe.params([*cursors, 0])).fetchone()
        last_row = tail if tail is not None else first_row  # rows deleted meanwhile
    return json_values(first_row), json_values(last_row)


def split_range(
    conn: psycopg.Connection[Any],
    keyset: Keyset,
    *,
    min_cursor: Cursor,
    max_cursor: Cursor,
    checkpoint: Cursor | None = None,
) -> tuple[Range, Range] | None:
    """Split what is left of a job's range (after ``checkpoint``, else from ``min_cursor``)
    at its median row into two inclusive ranges, for retrying a job that keeps timing out as
    two smaller ones. None when fewer than two rows are left (nothing to split).

    Counting is fine here: a job's range holds at most one batch.
    """
    if checkpoint is not None:
        remaining = keyset.between(checkpoint, max_cursor, after=True)
    else:
        remaining = keyset.between(min_cursor, max_cursor)
    rows_query = keyset.scoped().where(remaining)
    text, params = rows_query.sql()
    count_sql = sql.SQL("SELECT count(*) FROM ({}) AS {}").format(
        sql.SQL(text),  # type: ignore[arg-type]
        sql.Identifier("bbo_range"),
    )
    row = conn.execute(count_sql, params).fetchone()
    count = int(row[0]) if row else 0
    if count < 2:
        return None
    ordered = keyset.ordered(rows_query)
    first = keyset.fetch(conn, ordered.limit(1))[0]
    middle = keyset.fetch(conn, ordered.offset(count // 2 - 1).limit(2))
    last = keyset.fetch(conn, keyset.ordered(rows_query, descending=True).limit(1))[0]
    return (
        (json_values(first), json_values(middle[0])),
        (json_values(middle[1]), json_values(last)),
    )


def column_field(model: type[peewee.Model], column: str) -> peewee.Field:
    """The model field stored in ``column`` (fields may be named differently from columns)."""
    try:
        return model._meta.columns[column]  # type: ignore[attr-defined,no-any-return]
    except KeyError:
        names = ", ".join(sorted(model._meta.columns))  # type: ignore[attr-defined]
        raise TableNotFound(
            f"model {model.__name__} has no field for column {column!r} (columns: {names}); "
            "a model given by the operation class must map every cursor column"
        ) from None
