"""Sub-batches: each one short transaction, and the job's checkpoint commits inside it.

``each_sub_batch()`` returns the generator of :class:`SubBatchEngine`. For each sub-batch it
opens a transaction on the peewee database's connection for this thread — the connection the
author's peewee queries on ``self.table`` use too — sets ``statement_timeout`` and
``lock_timeout`` locally, locks the job row (only the runner holding the job's lease may write
it), reads the sub-batch's rows, and yields a :class:`SubBatch`. When the loop asks for the
next one, it writes the checkpoint and the counters on the job and operation rows and commits,
all in that one transaction. A crash therefore never re-applies a committed sub-batch and
never skips one.

An exception in the loop body leaves the generator suspended with its transaction open (Python
does not resume a generator on an exception in the consumer; it only closes it when collected).
The job runner must therefore call :meth:`SubBatchEngine.close` before anything else, which
rolls the open sub-batch back. ``break`` in the loop body does the same: the current sub-batch
is discarded, and the job ends as :class:`~dramatiq_bbo.errors.IncompleteJob` (retried from its
checkpoint) since the rest of its range was not walked.

Keyset bounds and splitting are in :mod:`dramatiq_bbo.keyset`, re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from .catalog import json_values
from .errors import ConfigurationError, LeaseLost, OperationDefinitionError, SubBatchTimeout
from .keyset import Keyset, next_batch_bounds, split_range, sub_batch_rows
from .queries import query
from .records import JobRecord, JobStatus, OperationRecord
from .settings import Settings
from .store import tables_for

__all__ = [
    "Keyset",
    "SubBatch",
    "SubBatchEngine",
    "next_batch_bounds",
    "split_range",
    "timeout_kind",
]


def timeout_kind(exc: BaseException) -> str | None:
    """``"statement_timeout"``/``"lock_timeout"`` if ``exc`` is (or wraps: peewee re-raises
    psycopg errors as its own) a Postgres timeout, else None."""
    stack: list[Any] = [exc]
    seen: set[int] = set()
    while stack:
        error = stack.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, SubBatchTimeout):
            return error.kind
        if isinstance(error, psycopg.errors.LockNotAvailable):
            return "lock_timeout"
        if isinstance(error, psycopg.errors.QueryCanceled):
            return "statement_timeout"
        stack.extend([error.__cause__, error.__context__, *error.args])
    return None


@contextlib.contextmanager
def translate_timeouts(doing: str) -> Iterator[None]:
    """Re-raise a Postgres timeout as SubBatchTimeout, the error the pipeline acts on."""
    try:
        yield
    except SubBatchTimeout:
        raise
    except Exception as exc:
        kind = timeout_kind(exc)
        if kind is None:
            raise
        raise SubBatchTimeout(
            f"{kind} while {doing}; the sub-batch rolled back: {str(exc).strip()}", kind=kind
        ) from exc


class SubBatch:
    """One sub-batch: the scoped rows between two cursors, inside their own transaction.

    Valid only inside its loop iteration. ``where()`` narrows it further (peewee expressions
    on ``table``'s fields); ``delete()``/``update()`` return the rows they changed and count
    them as affected; iterating yields model instances; ``connection``/``execute()`` give raw
    SQL in the same transaction, with :meth:`range_condition` to select the same rows.
    """

    def __init__(
        self,
        engine: SubBatchEngine,
        rows: Sequence[tuple[Any, ...]],
        token: object,
        conditions: tuple[Any, ...] = (),
    ) -> None:
        self._engine = engine
        self._keyset: Keyset = engine.keyset
        self._rows = rows
        self._token = token
        self._conditions = conditions
        self._first = json_values(rows[0])
        self._last = json_values(rows[-1])

    # -- what it covers -------------------------------------------------------------------------
    @property
    def table(self) -> Any:
        return self._keyset.model

    @property
    def bounds(self) -> tuple[Any, Any]:
        """(first, last) cursor of the sub-batch: scalars for a one-column cursor, else tuples."""
        return self._keyset.display(self._rows[0]), self._keyset.display(self._rows[-1])

    def __len__(self) -> int:
        """Rows the sub-batch held (within the scope) when it began."""
        return len(self._rows)

    def __repr__(self) -> str:
        first, last = self.bounds
        return f"<SubBatch {first!r}..{last!r} rows={len(self._rows)}>"

    def where(self, *expressions: Any) -> SubBatch:
        """The same sub-batch narrowed by ``expressions`` (ANDed), e.g. ``table.done == True``."""
        self._check_open()
        return SubBatch(self._engine, self._rows, self._token, self._conditions + expressions)

    def condition(self) -> Any:
        """The peewee condition selecting this sub-batch's rows (range, scope, ``where``)."""
        keyset = self._keyset
        condition = keyset.between(self._first, self._last)
        scope = keyset.scope_condition(within=condition)
        for extra in (scope, *self._conditions):
            if extra is not None:
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
        """Cursor values of the rows, scalars for a one-column cursor, tuples otherwise. As
        read when the sub-batch began, unless narrowed by ``where()``."""
        self._check_open()
        if not self._conditions:
            return [self._keyset.display(row) for row in self._rows]
        with translate_timeouts("reading the sub-batch"):
            rows = self.select(*self._keyset.fields).tuples()
            return [self._keyset.display(row) for row in rows]

    # -- writing --------------------------------------------------------------------------------
    def delete(self) -> int:
        """Delete the sub-batch's (narrowed) rows; returns how many, counted as affected."""
        self._check_open()
        with translate_timeouts("deleting in the sub-batch"):
            count = int(self.table.delete().where(self.condition()).execute())
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
        return self._engine.database.connection()  # type: ignore[no-any-return]

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


class SubBatchEngine:
    """Walks one job's range in sub-batches for ``each_sub_batch()`` (see the module docstring).

    ``stop_check()`` runs between sub-batches; a non-None reason ends the walk cleanly at the
    checkpoint and is kept in ``interrupted_reason``.
    """

    def __init__(
        self,
        *,
        keyset: Keyset,
        operation: OperationRecord,
        job: JobRecord,
        lease_owner: str,
        settings: Settings,
        stop_check: Callable[[], str | None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.keyset = keyset
        self.database: Any = keyset.model._meta.database
        self.operation = operation
        self.job = job
        self.lease_owner = lease_owner
        self.settings = settings
        self.stop_check = stop_check
        self._sleep = sleep
        self._operations, self._jobs = tables_for(operation)
        self.checkpoint: list[Any] | None = job.checkpoint_cursor
        self.exhausted = self.checkpoint is not None and self.checkpoint == job.max_cursor
        self.interrupted_reason: str | None = None
        self.started = False
        self.durations: list[float] = []
        self.processed = 0
        self.affected = 0
        self.current_token: object | None = None
        self._pending_affected = 0
        self._active: Iterator[SubBatch] | None = None

    def iterate(self) -> Iterator[SubBatch]:
        """The generator behind ``each_sub_batch()``; one at a time per job."""
        if self._active is not None:
            raise OperationDefinitionError(
                "each_sub_batch() is already being iterated for this job; nested or parallel "
                "walks of one job are not supported"
            )
        if self.database.in_transaction():
            raise ConfigurationError(
                "each_sub_batch() must own its transactions, but a peewee transaction is open "
                "on this thread; do not run an operation inside db.atomic()"
            )
        self.started = True
        self._active = self._walk()
        return self._active

    def close(self) -> None:
        """Roll back the open sub-batch, if any: call before any bookkeeping once perform()
        raised, since the suspended generator still holds the transaction and its locks."""
        active, self._active = self._active, None
        if active is not None:
            active.close()  # type: ignore[attr-defined]

    def count_affected(self, count: int) -> None:
        self._pending_affected += count

    def _walk(self) -> Iterator[SubBatch]:
        try:
            first = True
            while not self.exhausted:
                if not first:
                    reason = self.stop_check() if self.stop_check is not None else None
                    if reason:
                        self.interrupted_reason = str(reason)
                        return
                    if self.job.pause_ms > 0:
                        self._sleep(self.job.pause_ms / 1000)
                first = False
                yield from self._sub_batch()
        finally:
            self._active = None
            self.current_token = None

    def _sub_batch(self) -> Iterator[SubBatch]:
        """One sub-batch: begin, yield, checkpoint, commit (or roll back on any exit)."""
        job = self.job
        started = time.monotonic()
        with self.database.transaction():
            conn = self.database.connection()
            with translate_timeouts("starting a sub-batch"):
                self._begin(conn)
                rows = sub_batch_rows(
                    conn,
                    self.keyset,
                    min_cursor=job.min_cursor,
                    max_cursor=job.max_cursor,
                    checkpoint=self.checkpoint,
                    limit=job.sub_batch_size,
                )
            if not rows:
                self.exhausted = True
                return
            token = self.current_token = object()
            self._pending_affected = 0
            yield SubBatch(self, rows, token)
            self.current_token = None
            checkpoint = json_values(rows[-1])
            affected = self._pending_affected
            with translate_timeouts("writing the checkpoint"):
                self._write_checkpoint(conn, checkpoint, len(rows), affected)
        # committed: only now is the sub-batch part of the job's progress
        self.checkpoint = checkpoint
        self.processed += len(rows)
        self.affected += affected
        self.durations.append(time.monotonic() - started)
        if len(rows) < job.sub_batch_size or checkpoint == job.max_cursor:
            self.exhausted = True

    def _begin(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            query("batching_sub_batch_guards"),
            {
                "statement_timeout": f"{int(self.settings.statement_timeout_ms)}ms",
                "lock_timeout": f"{int(self.settings.lock_timeout_ms)}ms",
            },
        )
        row = conn.execute(
            query("batching_lock_job", jobs=self._jobs),
            {"partition": self.job.partition, "id": self.job.id},
        ).fetchone()
        if row is None or row[0] != JobStatus.RUNNING or row[1] != self.lease_owner:
            raise LeaseLost(
                f"job {self.job.id} is no longer held by this runner ({self.lease_owner}): "
                f"status {row[0] if row else 'deleted'}, lease owner {row[1] if row else None!r};"
                " another runner recovered it after its lease expired, so this one stops"
            )

    def _write_checkpoint(
        self, conn: psycopg.Connection[Any], checkpoint: list[Any], processed: int, affected: int
    ) -> None:
        conn.execute(
            query("batching_job_checkpoint", jobs=self._jobs),
            {
                "checkpoint": json.dumps(checkpoint),
                "processed": processed,
                "affected": affected,
                "lease_seconds": float(self.settings.lease_seconds),
                "partition": self.job.partition,
                "id": self.job.id,
            },
        )
        conn.execute(
            query("batching_operation_progress", operations=self._operations),
            {
                "processed": processed,
                "affected": affected,
                "partition": self.operation.partition,
                "id": self.operation.id,
            },
        )

    def compile_bare(self, expression: Any) -> tuple[str, list[Any]]:
        """A peewee expression as SQL with unqualified column names, for raw SQL."""
        context = self.database.get_sql_context()
        with context.scope_values():
            context.sql(expression)
        text, params = context.query()
        return text, list(params)

    def metrics(self) -> dict[str, Any]:
        """This run's numbers for the job's ``metrics`` column."""
        durations = self.durations
        return {
            "sub_batches": len(durations),
            "sub_batch_seconds": {
                "count": len(durations),
                "total": round(sum(durations), 6),
                "max": round(max(durations), 6) if durations else 0.0,
                "p50": round(statistics.median(durations), 6) if durations else 0.0,
            },
            "processed_tuples": self.processed,
            "affected_tuples": self.affected,
        }
