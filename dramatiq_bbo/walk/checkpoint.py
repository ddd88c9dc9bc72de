"""Sub-batches: each one short transaction, and the job's checkpoint commits inside it.

``each_sub_batch()`` returns the generator of :class:`SubBatchEngine`. For each sub-batch it
opens a transaction on the peewee database's connection for this thread — the connection the
author's peewee queries on ``self.table`` use too — under the walk's guards (statement, lock
and idle timeouts, and generic plans for its own probes, set for the session once per walk and
put back at its end; the author's statements run as the application plans them), checks that
this runner holds the job's lease, finds the sub-batch's first and last row and its row count,
and yields a :class:`SubBatch`. When the loop asks for the next one, it writes the checkpoint
on the job row — only if this runner still holds the job's lease — and commits, in that one
transaction, then runs the stop checks. A crash therefore never re-applies a committed
sub-batch and never skips one. The job row is not kept locked during the sub-batch, so the
heartbeat can renew the lease of a long one (:mod:`dramatiq_bbo.jobs.heartbeat`).

One row per sub-batch. Only the job row is written with the sub-batch; its counters are added
to the operation's row at most once a second (``ROLL_UP_SECONDS``) and when the walk ends, in
the same transaction as a checkpoint (operation row first, the one lock order). Views add what
a killed runner left on its job row alone (``bbo.operation_rows``).

Round trips (:mod:`dramatiq_bbo.walk.round_trips`): one per sub-batch besides the author's own
statements — the checkpoint, ``COMMIT``, the next ``BEGIN`` and the statement that checks the
lease and probes the next sub-batch go together — unless the job paces its sub-batches
(``pause_ms``) or peewee holds ``after_commit`` callbacks (they run between the two
transactions). The stop checks run after the commit, with the next sub-batch begun (it holds
no row lock yet; a stop rolls it back).
The sub-batch's rows stay in Postgres: ``ids()``, iteration and ``dicts()`` read them when the
author asks (:mod:`dramatiq_bbo.walk.sub_batch`).

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
import statistics
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import psycopg

from .. import clock
from ..errors import ConfigurationError, OperationDefinitionError
from ..logs import logger
from ..reconnect import heal, is_broken, is_connection_error
from ..settings import Settings
from ..state.records import JobRecord, OperationRecord
from ..state.store import tables_for
from .catalog import json_values
from .keyset import Keyset, next_batch_bounds, split_range
from .round_trips import Checkpoint, Found, RoundTrips
from .statements import Compiled, slots
from .sub_batch import SubBatch
from .timeouts import timeout_kind, translate_timeouts
from .transaction_stack import drop_connection, end_transaction

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
        "synchronous_commit": settings.sub_batch_synchronous_commit,
        # the walk runs on the application's connection, which the pool's lend never sees
        "clock_offset": repr(clock.offset_seconds()),
    }


#: the most seconds a walk's counts stay on its job row before they reach the operation's row
ROLL_UP_SECONDS = 1.0

#: a sub-batch opened: (connection, peewee transaction, what the begin found, when it began)
Opened = tuple[psycopg.Connection[Any], Any, Found, float]


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
        self.checkpoint: list[Any] | None = job.checkpoint_cursor
        self.exhausted = self.checkpoint is not None and self.checkpoint == job.max_cursor
        self.interrupted_reason: str | None = None
        self.started = False
        self.durations: list[float] = []
        self.processed = 0
        self.affected = 0
        self.current_token: object | None = None
        self.connection: psycopg.Connection[Any] | None = None
        self._pending_affected = 0
        self._active: Iterator[SubBatch] | None = None
        self._rolled_at = time.monotonic()
        guards = sub_batch_guards(settings)
        self._trips = RoundTrips(
            keyset,
            operation,
            job,
            lease_owner,
            guards,
            float(settings.lease_seconds),
            tables_for(operation),
        )

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
            self._drop_connection()

    def count_affected(self, count: int) -> None:
        self._pending_affected += count

    def _walk(self) -> Iterator[SubBatch]:
        try:
            opened = None if self.exhausted else self._open()
            while opened is not None:
                opened = yield from self._sub_batch(*opened)
        finally:
            self._active = None
            self.current_token = None
            self._restore_guards()

    def _sub_batch(
        self, conn: psycopg.Connection[Any], transaction: Any, found: Found, started: float
    ) -> Generator[SubBatch, None, Opened | None]:
        """One sub-batch: yield it, then the checkpoint and the commit (with the next
        sub-batch's begin when the walk goes on), then the stop checks; what the next one
        opened, if the walk goes on."""
        if found is None:
            self.exhausted = True
            self._end_empty(conn, transaction)
            return None
        first, last, count = found
        token = self.current_token = object()
        self._pending_affected, self.connection = 0, conn
        committed = False
        try:
            yield SubBatch(self, first, last, count, token)
            self.current_token = None
            cursor, affected = json_values(last), self._pending_affected
            last_one = count < self.job.sub_batch_size or cursor == self.job.max_cursor
            go_on = not last_one and self._may_pipeline()
            roll_up = not go_on or time.monotonic() - self._rolled_at >= ROLL_UP_SECONDS
            with translate_timeouts("writing the checkpoint"):
                checkpoint = Checkpoint(cursor, count, affected, roll_up)
                _, row, after = self._trips.commit_then_begin(conn, checkpoint, begin_next=go_on)
            committed = True
        finally:
            self.current_token = None
            self._end_transaction(conn, transaction, committed)
        self._committed(checkpoint, started)  # only now is it part of the job's progress
        if last_one:
            self.exhausted = True
            return None
        opened = None
        if after is not None:
            self._clean_after(conn, after)
        elif go_on:
            opened = self._continue(conn, row)
        if self._stopped(opened):
            return None
        if opened is not None:
            return opened
        if self.job.pause_ms > 0:
            self._sleep(self.job.pause_ms / 1000)
        return self._open()

    def _stopped(self, opened: Opened | None) -> bool:
        """The stop checks, between two sub-batches (the next one may have begun in the
        commit's round trip: it holds no row lock yet, and is rolled back on a stop)."""
        try:
            reason = self.stop_check() if self.stop_check is not None else None
            if not reason and self.job_check is not None:
                reason = self.job_check(self.operation, self.job)
        except BaseException:
            if opened is not None:
                self._end_transaction(opened[0], opened[1], False)
            raise
        if not reason:
            return False
        if opened is not None:
            self._end_transaction(opened[0], opened[1], False)
        self.interrupted_reason = str(reason)
        return True

    def _may_pipeline(self) -> bool:
        """Whether the next sub-batch may begin in the commit's round trip: not when the job
        pauses between sub-batches, nor when peewee must run ``after_commit`` callbacks first."""
        return self.job.pause_ms <= 0 and not self.database._state.commit_callbacks

    def _committed(self, checkpoint: Checkpoint, started: float) -> None:
        now = time.monotonic()
        self.checkpoint = checkpoint.cursor
        self.processed += checkpoint.processed
        self.affected += checkpoint.affected
        self.durations.append(now - started)
        if checkpoint.roll_up:
            self._rolled_at = now

    def _continue(self, conn: psycopg.Connection[Any], row: Any) -> Opened:
        """The next sub-batch, begun in the commit's round trip: its transaction on peewee's
        stack, what its begin statement found."""
        transaction = self.database.transaction()
        self.database.push_transaction(transaction)
        try:
            with translate_timeouts("starting a sub-batch"):
                found = self._trips.found(conn, row, self.checkpoint)
        except BaseException:
            self._end_transaction(conn, transaction, False)
            raise
        return conn, transaction, found, time.monotonic()

    def _clean_after(self, conn: psycopg.Connection[Any], error: BaseException) -> None:
        """The sub-batch committed but the next one's begin failed in the same round trip:
        roll that back; a lost connection is left for :meth:`_open` to replace (it begins
        again), any other error is the job's."""
        if is_broken(conn):
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        if not is_connection_error(error):
            with translate_timeouts("starting a sub-batch"):
                raise error

    def _open(self) -> Opened:
        """Begin a sub-batch on this thread's peewee connection, its transaction pushed on
        peewee's stack.

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
                    found = self._trips.begin(conn, self.checkpoint)
                return conn, transaction, found, time.monotonic()
            except Exception as exc:
                self._end_transaction(conn, transaction, False)
                if last_try or not is_connection_error(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _end_empty(self, conn: psycopg.Connection[Any], transaction: Any) -> None:
        """No row left: the open transaction rolls the job's leftover counts up and commits."""
        committed = False
        try:
            with translate_timeouts("writing the checkpoint"):
                self._trips.end_empty(conn)
            committed = True
        finally:
            self._end_transaction(conn, transaction, committed)

    def _restore_guards(self) -> None:
        """Put the session's timeouts back at the walk's end (a connection that cannot take
        it is dropped: the next user of this thread's connection gets a fresh one)."""
        conn = self.connection or getattr(self.database._state, "conn", None)
        if self._trips.restore is None or conn is None or is_broken(conn):
            return
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            self._trips.restore_guards(conn)
        except Exception:
            logger.warning("could not put the session's timeouts back; dropping the connection")
            self._drop_connection()

    def _drop_connection(self) -> None:
        drop_connection(self.database)

    def _end_transaction(
        self, conn: psycopg.Connection[Any], transaction: Any, committed: bool
    ) -> None:
        end_transaction(self.database, conn, transaction, committed)

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
