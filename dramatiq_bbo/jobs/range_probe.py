"""The next job's range, found with index probes under the operation's row lock.

Three probes, sent together in the creator's pipeline before any is read: the range's first
row after the resume cursor, its ``batch_size``-th row (``OFFSET``, an index walk, never a
count) and the last row of the operation's range (which ends the job when fewer rows remain).
The job creator (:mod:`dramatiq_bbo.jobs.creation`) sends them with the size the operation
had, and when the optimizer decides a larger one meanwhile it walks on from the old probe's
last row (:meth:`RangeProbe.grown`), so no index entry is read twice.

**Large jobs of an integer cursor are estimated, not walked.** The ``OFFSET`` walk reads one
index entry per row of the job (about 0.1 µs each): for a job of 200,000 rows, 20 ms spent
before its first sub-batch, some 5% of a delete's own time. When the cursor is one integer
column, the walk has no scope, the job is of :data:`ESTIMATE_FROM` rows or more and the caller
knows how dense the keys just walked were (rows per key value: the job before it, or the
operation's walked range), the job's last row is the last one at or below the key that many
rows should reach: one index probe, whatever the size. The job then holds about ``size``
rows, not exactly: the ranges still tile the operation's range with neither gap nor overlap,
the optimizer sizes the next job from the rows the job really walked, and the job's time
budget stops one that proves far longer than planned (a dense stretch after a sparse one).
No row below the estimate (a gap in the keys) falls back to the exact walk.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import psycopg

from ..state.records import OperationRecord
from ..walk.catalog import json_values
from ..walk.keyset import Keyset, Range
from ..walk.statements import eager

Cur = psycopg.Cursor[Any]

#: the size from which the range of a job with an integer cursor is estimated (see above)
ESTIMATE_FROM = 20_000
#: cursor types whose keys are whole numbers, so a span of keys is a number of key values
_INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


def density(first: Any, last: Any, rows: int) -> float | None:
    """Rows per key value over the inclusive range of single-column cursors ``first`` to
    ``last`` holding ``rows`` rows, counted from one row to the next (rows at every third key
    are a density of 1/3, exactly): what an estimated probe is sized with (None when it
    tells nothing)."""
    if not first or not last or len(first) != 1 or len(last) != 1 or rows < 2:
        return None
    try:
        steps = int(last[0]) - int(first[0])
    except (TypeError, ValueError):
        return None
    return (rows - 1) / steps if steps > 0 else None


def operation_density(op: OperationRecord) -> float | None:
    """The density of the operation's walked range: its processed rows over the keys from
    its first to its resume cursor (right after a job's end, every job of it counted)."""
    return density(op.min_cursor, op.next_cursor, int(op.processed_tuple_count or 0))


class RangeProbe:
    """The three index probes of the next job's range, sent before any is read (in the
    caller's pipeline), for one resume cursor and batch size (see
    :func:`~dramatiq_bbo.walk.keyset.next_batch_bounds`, which answers the same question
    with the tail probe sent only when needed). Prepared, with generic plans for an
    unscoped walk: planning a range probe makes Postgres look up the index's actual end,
    through every entry the operation deleted and vacuum has not removed yet."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        keyset: Keyset,
        op: OperationRecord,
        size: int,
        density: float | None = None,
    ) -> None:
        self.keyset, self._conn, self.density = keyset, conn, density
        self.estimate: int | None = None
        self._walk: tuple[Any, list[Any]] | None = None  # the OFFSET probe and its values
        self.basis = (op.min_cursor, op.max_cursor, op.next_cursor, size)
        self._cursors: list[Cur] = []
        self._rows: tuple[Any, Any, Any] | None = None
        if op.max_cursor is None:  # the table (or scope) was empty at enqueue
            self._rows = (None, None, None)
            return
        lower = op.next_cursor if op.next_cursor is not None else op.min_cursor
        after = op.next_cursor is not None
        first, offset, tail = keyset.batch_probes(after=after, bounded=bool(lower))
        values = [*(lower or []), *op.max_cursor]
        self._walk = (offset, [*values, max(size, 1) - 1])
        self.estimate = _estimate(keyset, lower, after, op.max_cursor, size, density)
        if self.estimate is not None:  # the tail probe below the estimated key
            last, last_values = tail, [*(lower or []), self.estimate, 0]
        else:
            last, last_values = self._walk
        self._cursors = [
            _send_probe(conn, keyset, first, [*values, 0]),
            _send_probe(conn, keyset, last, last_values),
            _send_probe(conn, keyset, tail, [*values, 0]),
        ]

    def fits(self, op: OperationRecord, size: int) -> bool:
        return self.basis == (op.min_cursor, op.max_cursor, op.next_cursor, size)

    def rows(self) -> tuple[Any, Any, Any]:
        """(first row, ``size``-th row, last row of the range), each None when missing."""
        if self._rows is None:
            first, last, tail = (cur.fetchone() for cur in self._cursors)
            if self.estimate is not None and last is None and first is not None:
                last = self._walked()  # no row up to the estimated key: a gap; walk it
            self._rows = (first, last, tail)
        return self._rows

    def _walked(self) -> Any:
        """The ``size``-th row found by the exact ``OFFSET`` walk (an estimate's fallback)."""
        assert self._walk is not None
        return _send_probe(self._conn, self.keyset, *self._walk).fetchone()

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
        if self.estimate is not None:
            return None  # an estimated probe at the new size costs as little
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


def _estimate(
    keyset: Keyset,
    lower: list[Any] | None,
    after: bool,
    upper: list[Any],
    size: int,
    density: float | None,
) -> int | None:
    """The key the job's ``size`` rows should reach from ``lower`` at ``density`` rows per key
    value (see the module docstring), capped at the operation's last key; None when the
    job's range is walked instead."""
    if density is None or density <= 0 or size < ESTIMATE_FROM or not lower:
        return None
    if not keyset.unscoped or len(keyset.type_names) != 1:
        return None
    if keyset.type_names[0] not in _INTEGER_TYPES:
        return None
    width = math.ceil(size / min(density, 1.0))  # never fewer key values than rows
    reach = int(lower[0]) + width - (0 if after else 1)
    return min(reach, int(upper[0]))
