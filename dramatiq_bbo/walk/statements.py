"""Sending SQL cheaply on the hot path: fewer round trips, and peewee compiled once.

A sub-batch costs what its round trips cost far more than what its statements cost, so the
hot path (:mod:`dramatiq_bbo.walk.checkpoint`, :mod:`dramatiq_bbo.jobs.run`) sends the statements
of one step together with :func:`pipelined` (psycopg's pipeline mode: every statement is
queued, one ``Sync`` collects the results, and an error skips the rest up to that ``Sync``, so
a ``COMMIT`` queued after a failed statement never runs). A ``fetch`` inside the block is a
round trip of its own; issue everything first, read the cursors afterwards.

:class:`Compiled` is a peewee query turned into SQL text once, with :class:`Slot` markers where
per-call values go (cursor bounds), so a statement run every sub-batch is not rebuilt and
re-compiled by peewee every time. The text is identical from call to call, which also lets
psycopg prepare it server-side (at once where the hot path asks for it with ``prepare=True``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from ..queries import query


class Slot:
    """A placeholder value in a query compiled once, filled per call (see :class:`Compiled`)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<Slot {self.index}>"


def slots(start: int, count: int) -> list[Slot]:
    """``count`` consecutive slots numbered from ``start``."""
    return [Slot(index) for index in range(start, start + count)]


class Compiled:
    """SQL text and parameters of a peewee query built with :class:`Slot` values."""

    __slots__ = ("text", "_params", "_positions")

    def __init__(self, text: str, params: Sequence[Any]) -> None:
        self.text = text
        self._params = list(params)
        self._positions = [
            (position, value.index)
            for position, value in enumerate(self._params)
            if isinstance(value, Slot)
        ]

    @classmethod
    def of(cls, query: Any) -> Compiled:
        text, params = query.sql()
        return cls(text, params)

    def params(self, values: Sequence[Any]) -> list[Any]:
        """The parameters with every slot ``i`` replaced by ``values[i]``."""
        params = list(self._params)
        for position, index in self._positions:
            params[position] = values[index]
        return params


@contextlib.contextmanager
def pipelined(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Queue the block's statements and collect them in one round trip (libpq ≥ 14); with an
    older libpq they simply run one by one, with the same results and errors."""
    if not psycopg.Pipeline.is_supported():
        yield
        return
    with conn.pipeline():
        yield


@contextlib.contextmanager
def one_transaction(
    conn: psycopg.Connection[Any], *, generic_plans: bool = False
) -> Iterator[None]:
    """The block as one transaction of :func:`pipelined` statements: ``BEGIN``, the block's
    statements and ``COMMIT`` queued together, so a block that reads nothing before its end
    costs one round trip. (psycopg's ``conn.transaction()`` syncs the pipeline as it begins
    and again as it commits: three round trips for the same block.) An error — a failed
    statement, or an exception the block raises — rolls the transaction back and
    propagates. On an autocommit connection already in a transaction (the caller's), the
    block is a savepoint queued the same way (``SAVEPOINT``, the block, ``RELEASE``), rolled
    back to on an error: never a ``COMMIT`` of the caller's work. A connection not in
    autocommit mode gets ``conn.transaction()``. ``generic_plans``: the transaction's prepared
    statements run their generic plans (``SET LOCAL plan_cache_mode``), only in a transaction
    of its own (a caller's keeps its plans)."""
    status = conn.info.transaction_status
    known = status in (psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS)
    if not psycopg.Pipeline.is_supported() or not conn.autocommit or not known:
        with pipelined(conn), conn.transaction():
            yield
        return
    if status == psycopg.pq.TransactionStatus.INTRANS:
        with _savepoint(conn):
            yield
        return
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            if generic_plans:
                conn.execute(query("pipeline_generic_plans"), prepare=eager(conn))
            yield
            conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


#: the savepoint of a :func:`one_transaction` block inside a caller's transaction
_SAVEPOINT = "bbo_step"


@contextlib.contextmanager
def _savepoint(conn: psycopg.Connection[Any]) -> Iterator[None]:
    try:
        with conn.pipeline():
            conn.execute(f"SAVEPOINT {_SAVEPOINT}")
            yield
            conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    except BaseException:
        if not conn.closed and not conn.broken:
            conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        raise


def rollback(conn: psycopg.Connection[Any]) -> None:
    """Roll back the transaction open on ``conn``, if any (nothing on a broken one: the server
    has ended it already)."""
    if conn.closed or conn.broken:
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()


def eager(conn: psycopg.Connection[Any]) -> bool | None:
    """``prepare=`` for a hot-path statement: prepared at its first run, unless the
    application turned preparing off on its connections (``prepare_threshold=None``, as a
    transaction-pooling PgBouncer before 1.21 requires)."""
    return None if conn.prepare_threshold is None else True
