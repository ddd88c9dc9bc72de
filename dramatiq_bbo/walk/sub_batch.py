"""The sub-batch an author's loop body receives: what it covers, and how to read and change it.

A :class:`SubBatch` is a view over the scoped rows between two cursors, valid only inside its
loop iteration: its transaction (and the job's checkpoint) belong to
:class:`~dramatiq_bbo.walk.checkpoint.SubBatchEngine`. It knows its first and last row and its row
count from when it began; its rows themselves are read only when the author asks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import psycopg
from psycopg import sql

from ..errors import OperationDefinitionError
from .catalog import json_values
from .keyset import Keyset
from .statements import Compiled, eager
from .timeouts import translate_timeouts


class Walk(Protocol):
    """What a sub-batch needs from the walk that made it (the engine that owns the
    transaction and the checkpoint): typed here so that the sub-batch does not import the
    engine, which imports the sub-batch to build one."""

    keyset: Keyset
    database: Any
    connection: psycopg.Connection[Any] | None
    current_token: object | None

    def range_condition(self, first: Sequence[Any], last: Sequence[Any]) -> Any: ...

    def range_delete(self) -> Compiled: ...

    def count_affected(self, count: int) -> None: ...

    def compile_bare(self, expression: Any) -> tuple[str, list[Any]]: ...


class SubBatch:
    """One sub-batch: the scoped rows between two cursors, inside their own transaction.

    Valid only inside its loop iteration. ``where()`` narrows it further (peewee expressions
    on ``table``'s fields); ``delete()``/``update()`` return the rows they changed and count
    them as affected; iterating yields model instances; ``connection``/``execute()`` give raw
    SQL in the same transaction, with :meth:`range_condition` to select the same rows.
    """

    def __init__(
        self,
        engine: Walk,
        first: Sequence[Any],
        last: Sequence[Any],
        count: int,
        token: object,
        conditions: tuple[Any, ...] = (),
    ) -> None:
        self._engine = engine
        self._keyset: Keyset = engine.keyset
        self._first_row = tuple(first)
        self._last_row = tuple(last)
        self._count = count
        self._token = token
        self._conditions = conditions
        self._first = json_values(first)
        self._last = json_values(last)
        self._ids: list[Any] | None = None

    # -- what it covers -------------------------------------------------------------------------
    @property
    def table(self) -> Any:
        return self._keyset.model

    @property
    def bounds(self) -> tuple[Any, Any]:
        """(first, last) cursor of the sub-batch: scalars for a one-column cursor, else tuples."""
        return self._keyset.display(self._first_row), self._keyset.display(self._last_row)

    def __len__(self) -> int:
        """Rows the sub-batch held (within the scope) when it began."""
        return self._count

    def __repr__(self) -> str:
        first, last = self.bounds
        return f"<SubBatch {first!r}..{last!r} rows={self._count}>"

    def where(self, *expressions: Any) -> SubBatch:
        """The same sub-batch narrowed by ``expressions`` (ANDed), e.g. ``table.done == True``."""
        self._check_open()
        return SubBatch(
            self._engine,
            self._first_row,
            self._last_row,
            self._count,
            self._token,
            self._conditions + expressions,
        )

    def condition(self) -> Any:
        """The peewee condition selecting this sub-batch's rows (range, scope, ``where``)."""
        condition = self._engine.range_condition(self._first, self._last)
        for extra in self._conditions:
            condition = condition & extra
        return condition

    # -- reading --------------------------------------------------------------------------------
    def select(self, *fields: Any) -> Any:
        """A peewee query over the sub-batch's rows in keyset order (all columns by default)."""
        self._check_open()
        return self._keyset.ordered(self.table.select(*fields).where(self.condition()))

    def __iter__(self) -> Iterator[Any]:
        with translate_timeouts("reading the sub-batch"):
            return iter(list(self.select()))

    def dicts(self) -> list[dict[str, Any]]:
        with translate_timeouts("reading the sub-batch"):
            return list(self.select().dicts())

    def ids(self) -> list[Any]:
        """Cursor values of the (narrowed) rows, scalars for a one-column cursor, tuples
        otherwise. Read from the table when first asked (not narrowed) or when called
        (narrowed): call it before deleting the rows it should list."""
        self._check_open()
        if self._ids is not None and not self._conditions:
            return list(self._ids)
        with translate_timeouts("reading the sub-batch"):
            rows = self.select(*self._keyset.fields).tuples()
            found = [self._keyset.display(row) for row in rows]
        if not self._conditions:
            self._ids = found
        return list(found)

    # -- writing --------------------------------------------------------------------------------
    def delete(self) -> int:
        """Delete the sub-batch's (narrowed) rows; returns how many, counted as affected."""
        self._check_open()
        with translate_timeouts("deleting in the sub-batch"):
            if self._conditions:
                count = int(self.table.delete().where(self.condition()).execute())
            else:  # the common case: compiled once per job, sent by psycopg directly
                statement = self._engine.range_delete()
                params = statement.params([*self._first, *self._last])
                conn = self.connection
                cursor = conn.execute(statement.text, params, prepare=eager(conn))
                count = int(cursor.rowcount)
        self._engine.count_affected(count)
        return count

    def update(self, values: dict[Any, Any] | None = None, /, **fields: Any) -> int:
        """Update the sub-batch's (narrowed) rows, e.g. ``update(visits=table.visits + 1)``."""
        self._check_open()
        query_ = self.table.update(values, **fields).where(self.condition())
        with translate_timeouts("updating in the sub-batch"):
            count = int(query_.execute())
        self._engine.count_affected(count)
        return count

    # -- raw SQL on the same connection ---------------------------------------------------------
    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The psycopg connection holding the sub-batch's transaction (do not commit on it)."""
        self._check_open()
        conn = self._engine.connection
        return conn if conn is not None else self._engine.database.connection()

    def execute(
        self, statement: Any, params: Any = None, *, count_affected: bool = False
    ) -> psycopg.Cursor[Any]:
        """Run raw SQL in the sub-batch's transaction; ``count_affected`` adds its rowcount
        to the affected tuples (for a raw DELETE/UPDATE of the sub-batch's rows)."""
        with translate_timeouts("running SQL in the sub-batch"):
            cursor = self.connection.execute(statement, params)
        if count_affected and cursor.rowcount > 0:
            self._engine.count_affected(cursor.rowcount)
        return cursor

    def range_condition(self) -> tuple[sql.Composable, list[Any]]:
        """``(condition, params)`` selecting the sub-batch's rows in raw SQL on the target table
        (columns unqualified): ``cur.execute(SQL("DELETE FROM t WHERE {}").format(c), p)``."""
        keyset = self._keyset
        columns = sql.SQL(", ").join(sql.Identifier(column) for column in keyset.columns)
        casts = sql.SQL(", ").join(
            sql.SQL("%s::") + sql.SQL(type_name)  # type: ignore[arg-type]
            for type_name in keyset.type_names
        )
        parts: list[sql.Composable] = [
            sql.SQL("({c}) >= ({v}) AND ({c}) <= ({v})").format(c=columns, v=casts)
        ]
        params: list[Any] = [*self._first, *self._last]
        range_only = keyset.between(self._first, self._last)
        for extra in (keyset.scope_condition(within=range_only), *self._conditions):
            if extra is not None:
                text, extra_params = self._engine.compile_bare(extra)
                parts.append(sql.SQL("({})").format(sql.SQL(text)))  # type: ignore[arg-type]
                params.extend(extra_params)
        return sql.SQL(" AND ").join(parts), params

    def _check_open(self) -> None:
        if self._engine.current_token is not self._token:
            raise OperationDefinitionError(
                f"{self!r} was used after its loop iteration: its transaction has ended; "
                "use a sub-batch only inside the iteration that yielded it"
            )
