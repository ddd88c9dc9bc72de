"""Sub-batches: each one short transaction, and the job's checkpoint commits inside it.

``each_sub_batch()`` returns the generator of :class:`SubBatchEngine`. For each sub-batch it
opens a transaction on the peewee database's connection for this thread — the connection the
author's peewee queries on ``self.table`` use too — sets ``statement_timeout``,
``lock_timeout`` and an idle timeout locally, checks that this runner holds the job's lease,
finds the sub-batch's first and last row and its row count, and yields a :class:`SubBatch`.
When the loop asks for the next one, it writes the counters on the operation and job rows and
the checkpoint — only if this runner still holds the job's lease — and commits, all in that
one transaction. A crash therefore never re-applies a committed sub-batch and never skips
one. The job row is not kept locked during the sub-batch, so the heartbeat can renew the lease
of a long one (:mod:`dramatiq_bbo.jobs.heartbeat`).

Round trips. ``BEGIN``, the guards (``SET LOCAL``), and one statement that reads the job's lease
owner and probes the sub-batch's first and last rows (``batching_begin_sub_batch``) go in one
round trip (a psycopg pipeline; see :mod:`dramatiq_bbo.walk.statements`). The checkpoint (one
statement for the operation, one for the job) goes with the ``COMMIT`` in another. So a
sub-batch costs two round trips besides the author's own statements (one more for the short
last sub-batch of a job). A ``COMMIT`` queued behind a failed checkpoint never runs: the
pipeline skips everything after an error. The sub-batch's rows stay in Postgres: ``ids()``,
iteration and ``dicts()`` read them when the author asks (:mod:`dramatiq_bbo.walk.sub_batch`).

An exception in the loop body leaves the generator suspended with its transaction open (Python
does not resume a generator on an exception in the consumer; it only closes it when collected).
The job runner must therefore call :meth:`SubBatchEngine.close` before anything else, which
rolls the open sub-batch back. ``break`` in the loop body does the same: the current sub-batch
is discarded, and the job ends as :class:`~dramatiq_bbo.errors.IncompleteJob` (retried from its
checkpoint) since the rest of its range was not walked.

Keyset bounds and splitting are in :mod:`dramatiq_bbo.walk.keyset`, the sub-batch the author
sees in :mod:`dramatiq_bbo.walk.sub_batch`, timeouts in :mod:`dramatiq_bbo.walk.timeouts`.
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

from ..errors import ConfigurationError, LeaseLost, OperationDefinitionError
from ..logs import logger
from ..queries import query
from ..reconnect import heal, is_broken, is_connection_error
from ..settings import Settings
from ..state.records import JobRecord, JobStatus, OperationRecord
from ..state.store import tables_for
from .catalog import json_values
from .keyset import Keyset, next_batch_bounds, split_range
from .statements import Compiled, pipelined, slots
from .sub_batch import SubBatch
from .timeouts import timeout_kind, translate_timeouts

__all__ = [
    "JobCheck",
    "Keyset",
    "SubBatch",
    "SubBatchEngine",
    "next_batch_bounds",
    "split_range",
    "timeout_kind",
    "translate_timeouts",
]

#: a stop check that sees the job it runs between (the pipeline's middleware gate)
JobCheck = Callable[[OperationRecord, JobRecord], str | None]


def sub_batch_guards(settings: Settings) -> dict[str, str]:
    """``batching_sub_batch_guards`` parameters: the statement and lock timeouts, and the idle
    timeout that lets the server end the session (and free its locks) of a runner frozen
    inside a sub-batch, before its lease expires and another runner takes the job over."""
    return {
        "statement_timeout": f"{int(settings.statement_timeout_ms)}ms",
        "lock_timeout": f"{int(settings.lock_timeout_ms)}ms",
        "idle_timeout": f"{int(float(settings.sub_batch_idle_timeout_seconds) * 1000)}ms",
    }


class SubBatchEngine:
    """Walks one job's range in sub-batches for ``each_sub_batch()`` (see the module docstring).

    ``stop_check()``, then ``job_check(operation, job)``, run between sub-batches; a non-None
    reason ends the walk cleanly at the checkpoint and is kept in ``interrupted_reason``.
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
        job_check: JobCheck | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.keyset = keyset
        self.database: Any = keyset.model._meta.database
        self.operation = operation
        self.job = job
        self.lease_owner = lease_owner
        self.settings = settings
        self.stop_check = stop_check
        self.job_check = job_check
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
        self._guards = sub_batch_guards(settings)
        self._sql: dict[str, str] = {}

    def iterate(self) -> Iterator[SubBatch]:
        """The generator behind ``each_sub_batch()``; one at a time per job."""
        if self._active is not None:
            raise OperationDefinitionError(
                "each_sub_batch() is already being iterated for this job; nested or parallel "
                "walks of one job are not supported"
            )
        heal(self.database)  # a connection that broke since the last job is replaced
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
        if active is None:
            return
        try:
            active.close()  # type: ignore[attr-defined]
        except Exception:
            logger.exception("rolling back the open sub-batch failed; dropping the connection")
            database, conn = self.database, getattr(self.database._state, "conn", None)
            database._state.reset()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def count_affected(self, count: int) -> None:
        self._pending_affected += count

    def _walk(self) -> Iterator[SubBatch]:
        try:
            first = True
            while not self.exhausted:
                if not first:
                    reason = self.stop_check() if self.stop_check is not None else None
                    if not reason and self.job_check is not None:
                        reason = self.job_check(self.operation, self.job)
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
        """One sub-batch: begin, yield, checkpoint, commit (or roll back on any exit).

        The transaction is peewee's as far as the author's code can tell (it is pushed on the
        database's transaction stack, so ``db.atomic()`` inside a sub-batch is a savepoint and
        ``after_commit`` hooks run at its commit), but its ``BEGIN`` and ``COMMIT`` travel
        with our own statements instead of costing two round trips of their own."""
        job = self.job
        started = time.monotonic()
        conn, transaction, found = self._open()
        committed = False
        try:
            if found is None:
                self.exhausted = True
                return
            first, last, count = found
            token = self.current_token = object()
            self._pending_affected = 0
            yield SubBatch(self, first, last, count, token)
            self.current_token = None
            checkpoint = json_values(last)
            affected = self._pending_affected
            with translate_timeouts("writing the checkpoint"):
                self._commit(conn, checkpoint, count, affected)
            committed = True
        finally:
            self.current_token = None
            self._end_transaction(conn, transaction, committed)
        # committed: only now is the sub-batch part of the job's progress
        self.checkpoint = checkpoint
        self.processed += count
        self.affected += affected
        self.durations.append(time.monotonic() - started)
        if count < job.sub_batch_size or checkpoint == job.max_cursor:
            self.exhausted = True

    def _open(self) -> tuple[psycopg.Connection[Any], Any, Any]:
        """Begin a sub-batch on this thread's peewee connection: ``(connection, peewee
        transaction, what _begin found)``, the transaction pushed on peewee's stack.

        A connection found dead here (terminated while idle, or by a restart since the last
        sub-batch) is replaced and the begin tried once more on a new one: nothing of the
        sub-batch had happened yet. A second failure propagates (Postgres is away: the job
        ends as interrupted, see :mod:`dramatiq_bbo.jobs.run`)."""
        database = self.database
        for last_try in (False, True):
            heal(database)
            conn = database.connection()
            transaction = database.transaction()
            database.push_transaction(transaction)
            try:
                with translate_timeouts("starting a sub-batch"):
                    return conn, transaction, self._begin(conn)
            except Exception as exc:
                self._end_transaction(conn, transaction, False)
                if last_try or not is_connection_error(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _begin(
        self, conn: psycopg.Connection[Any]
    ) -> tuple[tuple[Any, ...], tuple[Any, ...], int] | None:
        """BEGIN, the guards, then one statement for the job-row lock and the probes for the
        sub-batch's first and last rows, in one round trip: ``(first row, last row, row
        count)``, or None when no row is left in the job's range. A sub-batch shorter than
        ``sub_batch_size`` (the end of the range) costs one more round trip to find its last
        row and count."""
        job = self.job
        size = job.sub_batch_size
        after = self.checkpoint is not None
        first_probe, last_probe, tail = self.keyset.sub_batch_probes(after=after)
        lower = self.checkpoint if self.checkpoint is not None else job.min_cursor
        cursors = [*lower, *job.max_cursor]
        params = [
            *first_probe.params(cursors),
            *last_probe.params([*cursors, size - 1]),
            job.partition,
            job.id,
        ]
        with pipelined(conn):
            self.database.begin()
            conn.execute(self._text(conn, "batching_sub_batch_guards"), self._guards)
            begun = conn.execute(self._begin_text(conn, after), params)
        row = begun.fetchone()
        if row is None or row[0] != JobStatus.RUNNING or row[1] != self.lease_owner:
            raise LeaseLost(
                f"job {job.id} is no longer held by this runner ({self.lease_owner}): "
                f"status {row[0] if row else 'deleted'}, lease owner {row[1] if row else None!r};"
                " another runner recovered it after its lease expired, so this one stops"
            )
        width = len(self.keyset.fields)
        first_row, last_row = row[2 : 2 + width], row[2 + width :]
        if first_row[0] is None:  # cursor columns are NOT NULL: no row left
            return None
        if last_row[0] is not None:
            return tuple(first_row), tuple(last_row), size
        rows = conn.execute(tail.text, tail.params([*cursors, size])).fetchall()
        if not rows:
            return None
        return tuple(rows[0][:width]), tuple(rows[-1][:width]), int(rows[0][width])

    def _begin_text(self, conn: psycopg.Connection[Any], after: bool) -> str:
        """``batching_begin_sub_batch`` with this walk's probes, composed once per job."""
        name = f"begin_after={after}"
        text = self._sql.get(name)
        if text is None:
            first, last, _ = self.keyset.sub_batch_probes(after=after)
            composed = query(
                "batching_begin_sub_batch",
                jobs=self._jobs,
                first=sql.SQL(first.text),  # type: ignore[arg-type]
                last=sql.SQL(last.text),  # type: ignore[arg-type]
            )
            text = self._sql[name] = composed.as_string(conn)
        return text

    def _commit(
        self, conn: psycopg.Connection[Any], checkpoint: list[Any], processed: int, affected: int
    ) -> None:
        """The counters on both rows and the checkpoint on the job, and COMMIT: one round
        trip; the COMMIT is skipped if the checkpoint fails, which it does when this runner
        no longer holds the job's lease (SQLSTATE ``LEASE``)."""
        params = {
            "checkpoint": json.dumps(checkpoint),
            "processed": processed,
            "affected": affected,
            "lease_seconds": float(self.settings.lease_seconds),
            "lease_owner": self.lease_owner,
            "job_partition": self.job.partition,
            "job_id": self.job.id,
            "partition": self.operation.partition,
            "id": self.operation.id,
        }
        with pipelined(conn):  # operation row, then job row: the one lock order
            conn.execute(self._text(conn, "batching_checkpoint_operation"), params)
            conn.execute(self._text(conn, "batching_checkpoint_job"), params)
            self.database.commit()

    def _end_transaction(
        self, conn: psycopg.Connection[Any], transaction: Any, committed: bool
    ) -> None:
        """Take the sub-batch's transaction off peewee's stack; roll it back unless it
        committed, and run or drop peewee's ``after_commit`` callbacks accordingly.

        On a lost connection there is nothing to roll back (the server did): the connection
        is discarded so the next sub-batch, or the next job on this thread, opens a new one.
        Whether a ``COMMIT`` lost with the connection happened is not guessed: the checkpoint
        committed with the sub-batch or not at all, and the job resumes from the one stored
        in its row."""
        database = self.database
        if database.top_transaction() is transaction:
            database.pop_transaction()
        if committed:
            database._run_commit_callbacks()
            return
        database._clear_commit_callbacks()
        if is_broken(conn):
            heal(database)
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                heal(database)

    def _text(self, conn: psycopg.Connection[Any], name: str) -> str:
        """A named query of the sub-batch, composed for this job's tables once."""
        text = self._sql.get(name)
        if text is None:
            composed = query(name, operations=self._operations, jobs=self._jobs)
            text = self._sql[name] = composed.as_string(conn)
        return text

    def range_condition(self, first: Sequence[Any], last: Sequence[Any]) -> Any:
        """The peewee condition of the scoped rows between two cursors, inclusive."""
        keyset = self.keyset
        condition = keyset.between(first, last)
        scope = keyset.scope_condition(within=condition)
        return condition if scope is None else condition & scope

    def range_delete(self) -> Compiled:
        """``DELETE`` of a sub-batch's rows, compiled once; slots: first then last cursor."""
        width = len(self.keyset.fields)

        def build() -> Any:
            condition = self.range_condition(slots(0, width), slots(width, width))
            return self.keyset.model.delete().where(condition)

        return self.keyset.compiled("range_delete", build)

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
