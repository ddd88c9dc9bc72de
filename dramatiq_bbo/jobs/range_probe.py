"""The next job's range, found with index probes under the operation's row lock.

Three probes, sent together in the creator's pipeline before any is read: the range's first
row after the resume cursor, its ``batch_size``-th row (``OFFSET``, an index walk, never a
count) and the last row of the operation's range (which ends the job when fewer rows remain).
The job creator (:mod:`dramatiq_bbo.jobs.creation`) sends them with the size the operation
had, and when the optimizer decides a larger one meanwhile it walks on from the old probe's
last row (:meth:`RangeProbe.grown`), so no index entry is read twice.
"""

from __future__ import annotations

import copy
from typing import Any

import psycopg

from ..state.records import OperationRecord
from ..walk.catalog import json_values
from ..walk.keyset import Keyset, Range
from ..walk.statements import eager

Cur = psycopg.Cursor[Any]


class RangeProbe:
    """The three index probes of the next job's range, sent before any is read (in the
    caller's pipeline), for one resume cursor and batch size (see
    :func:`~dramatiq_bbo.walk.keyset.next_batch_bounds`, which answers the same question
    with the tail probe sent only when needed). Prepared, with generic plans for an
    unscoped walk: planning a range probe makes Postgres look up the index's actual end,
    through every entry the operation deleted and vacuum has not removed yet."""

    def __init__(
        self, conn: psycopg.Connection[Any], keyset: Keyset, op: OperationRecord, size: int
    ) -> None:
        self.keyset = keyset
        self.basis = (op.min_cursor, op.max_cursor, op.next_cursor, size)
        self._cursors: list[Cur] = []
        self._rows: tuple[Any, Any, Any] | None = None
        if op.max_cursor is None:  # the table (or scope) was empty at enqueue
            self._rows = (None, None, None)
            return
        lower = op.next_cursor if op.next_cursor is not None else op.min_cursor
        probes = keyset.batch_probes(after=op.next_cursor is not None, bounded=bool(lower))
        values = [*(lower or []), *op.max_cursor]
        offsets = (0, max(size, 1) - 1, 0)
        self._cursors = [
            _send_probe(conn, keyset, probe, [*values, offset])
            for probe, offset in zip(probes, offsets, strict=True)
        ]

    def fits(self, op: OperationRecord, size: int) -> bool:
        return self.basis == (op.min_cursor, op.max_cursor, op.next_cursor, size)

    def rows(self) -> tuple[Any, Any, Any]:
        """(first row, ``size``-th row, last row of the range), each None when missing."""
        if self._rows is None:
            first, last, tail = (cur.fetchone() for cur in self._cursors)
            self._rows = (first, last, tail)
        return self._rows

    def grown(
        self, conn: psycopg.Connection[Any], op: OperationRecord, size: int
    ) -> RangeProbe | None:
        """This range probed at a larger ``size`` by walking on from this probe's
        ``size``-th row (the index entries before it are not read twice: the optimizer
        grows a job's size after the probe at the old one was sent); None when the cursor
        moved or the size shrank (probe afresh)."""
        old = self.basis
        if old[:3] != (op.min_cursor, op.max_cursor, op.next_cursor) or size <= old[3]:
            return None
        first, last, tail = self.rows()
        grown = copy.copy(self)
        grown.basis = (*old[:3], size)
        if first is None or last is None or op.max_cursor is None:
            return grown  # fewer rows than the old size left: the same range
        probe = self.keyset.batch_probes(after=True, bounded=True)[1]
        values = [*last, *op.max_cursor, size - old[3] - 1]
        grown._rows, grown._cursors = None, [_send_probe(conn, self.keyset, probe, values)]
        further = grown._cursors[0].fetchone()
        grown._rows = (first, further, tail)
        return grown

    def bounds(self) -> Range | None:
        """The range (first, last), or None when no row remains."""
        first, last, tail = self.rows()
        if first is None:
            return None
        if last is None:  # fewer than batch_size rows left: the range's last row ends it
            last = tail if tail is not None else first  # rows deleted meanwhile
        return json_values(first), json_values(last)


def _send_probe(
    conn: psycopg.Connection[Any], keyset: Keyset, probe: Any, values: list[Any]
) -> Cur:
    """One range probe (``values`` fill its slots); an unscoped walk's prepared, to run its
    generic plan (the transaction's ``plan_cache_mode``, see ``one_transaction``)."""
    prepare = eager(conn) if keyset.unscoped else None
    return conn.execute(probe.text, probe.params(values), prepare=prepare)
