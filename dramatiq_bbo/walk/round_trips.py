"""The statements a walk sends around its sub-batches, and how few round trips carry them.

Per sub-batch, besides the author's own statements, one round trip: this sub-batch's
checkpoint, its ``COMMIT``, the next sub-batch's ``BEGIN`` and the statement that checks the
job's lease and finds the next sub-batch's first and last rows, queued together in one psycopg
pipeline (:func:`~dramatiq_bbo.walk.statements.pipelined`). The first sub-batch of a walk costs
one round trip of its own, which also sets the walk's guards for the session; the last one's
commit carries the roll-up of the job's counters onto its operation and puts the guards back.

An error skips the rest of a pipeline. Which statement failed tells what happened: a failed
checkpoint (``LEASE``: another runner holds the job) means nothing committed; a failure after
the ``COMMIT`` means the sub-batch is committed and only the next one's begin failed. The
``COMMIT``'s own result says which (:func:`commit_then_begin` returns it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..errors import LeaseLost
from ..queries import query
from ..state.records import JobRecord, JobStatus, OperationRecord
from .keyset import Keyset
from .statements import eager, pipelined

#: the session settings batching_session_guards changes, in the order it reads them first,
#: and batching_restore_guards puts back at the walk's end
RESTORED = (
    "statement_timeout",
    "lock_timeout",
    "idle_timeout",
    "plan_cache_mode",
    "synchronous_commit",
)

#: a sub-batch as its begin found it: (first row, last row, row count); None: no row left
Found = tuple[tuple[Any, ...], tuple[Any, ...], int] | None


@dataclass
class Checkpoint:
    """What one sub-batch's commit writes: the job's new checkpoint and this sub-batch's
    counts; ``roll_up`` also adds the job's counts not yet on the operation to it."""

    cursor: list[Any]
    processed: int
    affected: int
    roll_up: bool


class RoundTrips:
    """The walk's statements for one job, composed once, and the pipelines that send them."""

    def __init__(
        self,
        keyset: Keyset,
        operation: OperationRecord,
        job: JobRecord,
        lease_owner: str,
        guards: dict[str, str],
        lease_seconds: float,
        tables: tuple[Any, Any],
    ) -> None:
        self.keyset = keyset
        self.operation = operation
        self.job = job
        self.lease_owner = lease_owner
        self.guards = guards
        self.lease_seconds = lease_seconds
        self.restore: dict[str, str] | None = None  # the session's timeouts before the walk
        self._operations, self._jobs = tables  # (operations, jobs) of the operation's scope
        self._texts: dict[str, str] = {}
        self._guarded: psycopg.Connection[Any] | None = None
        # an unscoped walk's probes are index range scans: planned once (generic), like the
        # walk's other statements (batching_session_guards); a scoped walk's as the app plans
        self.generic = keyset.unscoped

    # -- beginning a sub-batch ------------------------------------------------------------------
    def begin(self, conn: psycopg.Connection[Any], checkpoint: list[Any] | None) -> Found:
        """``BEGIN`` and the begin statement (plus the session guards, the first time), in one
        round trip; then what it found (one more round trip for a short last sub-batch)."""
        if conn is not self._guarded:  # a new connection (the old one broke): guard it too
            self.restore, self._guarded = None, conn
        guards = None
        try:
            with pipelined(conn):
                if self.restore is None:
                    guards = conn.execute(self.text(conn, "batching_session_guards"), self.guards)
                conn.execute("BEGIN")
                begun = self._queue_begin(conn, checkpoint)
        finally:  # guards set are guards to put back, whatever failed after them
            if _ran(guards):
                row = guards.fetchone()  # type: ignore[union-attr]
                assert row is not None
                self.restore = dict(zip(RESTORED, row[: len(RESTORED)], strict=True))
        return self.found(conn, begun.fetchone(), checkpoint)

    def _queue_begin(self, conn: psycopg.Connection[Any], checkpoint: list[Any] | None) -> Any:
        """Queue the begin statement (after the application's plan mode, for a scoped walk)."""
        if not self.generic:  # a scoped walk's probes: planned as the application plans
            conn.execute(self.text(conn, "batching_app_plans"))
        text, params = self.begin_text(conn, checkpoint), self.begin_params(checkpoint)
        return conn.execute(text, params, prepare=eager(conn))

    def begin_text(self, conn: psycopg.Connection[Any], checkpoint: list[Any] | None) -> str:
        """``batching_begin_sub_batch`` with this walk's probes, composed once per job."""
        after = checkpoint is not None
        name = f"begin_after={after}"
        text = self._texts.get(name)
        if text is None:
            first, last, _ = self.keyset.sub_batch_probes(after=after)
            composed = query(
                "batching_begin_sub_batch",
                jobs=self._jobs,
                first=sql.SQL(first.text),  # type: ignore[arg-type]
                last=sql.SQL(last.text),  # type: ignore[arg-type]
            )
            text = self._texts[name] = composed.as_string(conn)
        return text

    def begin_params(self, checkpoint: list[Any] | None) -> list[Any]:
        job = self.job
        first_probe, last_probe, _ = self.keyset.sub_batch_probes(after=checkpoint is not None)
        lower = checkpoint if checkpoint is not None else job.min_cursor
        cursors = [*lower, *job.max_cursor]
        return [
            *first_probe.params(cursors),
            *last_probe.params([*cursors, job.sub_batch_size - 1]),
            job.partition,
            job.id,
        ]

    def found(
        self, conn: psycopg.Connection[Any], row: Sequence[Any] | None, checkpoint: list[Any] | None
    ) -> Found:
        """The begin statement's row read: the lease checked, the sub-batch's bounds."""
        job = self.job
        if row is None or row[1] != JobStatus.RUNNING or row[2] != self.lease_owner:
            raise LeaseLost(
                f"job {job.id} is no longer held by this runner ({self.lease_owner}): "
                f"status {row[1] if row else 'deleted'}, lease owner {row[2] if row else None!r};"
                " another runner recovered it after its lease expired, so this one stops"
            )
        _check_durable(job, row[3], checkpoint)
        width = len(self.keyset.fields)
        first_row, last_row = row[4 : 4 + width], row[4 + width :]
        if first_row[0] is None:  # cursor columns are NOT NULL: no row left
            return None
        if last_row[0] is not None:
            return tuple(first_row), tuple(last_row), job.sub_batch_size
        _, _, tail = self.keyset.sub_batch_probes(after=checkpoint is not None)
        lower = checkpoint if checkpoint is not None else job.min_cursor
        params = tail.params([*lower, *job.max_cursor, job.sub_batch_size])
        rows = conn.execute(tail.text, params).fetchall()
        if not rows:
            return None
        return tuple(rows[0][:width]), tuple(rows[-1][:width]), int(rows[0][width])

    # -- ending a sub-batch -----------------------------------------------------------------------
    def commit_then_begin(
        self, conn: psycopg.Connection[Any], checkpoint: Checkpoint, *, begin_next: bool
    ) -> tuple[bool, Any, BaseException | None]:
        """The checkpoint (and the roll-up), ``COMMIT``, then — with ``begin_next`` — the next
        sub-batch's ``BEGIN`` and begin statement, else the session guards put back: one
        round trip. Returns (committed, the begin statement's row, the error that stopped
        the pipeline after the commit). An error before the commit is raised."""
        params = self.checkpoint_params(checkpoint)
        committing = begun = restored = None
        try:
            with pipelined(conn):
                if checkpoint.roll_up:
                    conn.execute(self.text(conn, "batching_roll_up_counters"), params)
                conn.execute(
                    self.text(conn, "batching_checkpoint_job"), params, prepare=eager(conn)
                )
                committing = conn.execute("COMMIT")
                if begin_next:
                    conn.execute("BEGIN")
                    begun = self._queue_begin(conn, checkpoint.cursor)
                else:
                    restored = self._queue_restore(conn)
        except Exception as exc:
            if not _ran(committing):
                raise
            return True, None, exc
        finally:
            self._restored(restored)
        return True, begun.fetchone() if begun is not None else None, None

    def checkpoint_params(self, checkpoint: Checkpoint) -> dict[str, Any]:
        return {
            "checkpoint": json.dumps(checkpoint.cursor),
            "processed": checkpoint.processed,
            "affected": checkpoint.affected,
            "roll_up": checkpoint.roll_up,
            "lease_seconds": self.lease_seconds,
            "lease_owner": self.lease_owner,
            "job_partition": self.job.partition,
            "job_id": self.job.id,
            "partition": self.operation.partition,
            "id": self.operation.id,
        }

    def end_empty(self, conn: psycopg.Connection[Any]) -> None:
        """The walk found no row left in an open transaction: roll what the job counted and
        the operation lacks up onto it (a runner killed before its walk's end left that),
        commit, and put the session guards back; one round trip."""
        params = self.checkpoint_params(Checkpoint([], 0, 0, True))
        restored = None
        try:
            with pipelined(conn):
                conn.execute(self.text(conn, "batching_roll_up_counters"), params)
                conn.execute(self.text(conn, "batching_mark_rolled_up"), params)
                conn.execute("COMMIT")
                restored = self._queue_restore(conn)
        finally:
            self._restored(restored)

    def restore_guards(self, conn: psycopg.Connection[Any]) -> None:
        """Put the session's timeouts back (outside a transaction) if the walk set them."""
        self._restored(self._queue_restore(conn))

    def _queue_restore(self, conn: psycopg.Connection[Any]) -> Any:
        """Send (or, in a pipeline, queue) the guards' restore; its cursor (None: nothing to
        do)."""
        if self.restore is None:
            return None
        return conn.execute(self.text(conn, "batching_restore_guards"), self.restore)

    def _restored(self, cursor: Any) -> None:
        if _ran(cursor):
            self.restore = None

    def text(self, conn: psycopg.Connection[Any], name: str) -> str:
        """A named query of the walk, composed for this job's tables once."""
        text = self._texts.get(name)
        if text is None:
            composed = query(name, operations=self._operations, jobs=self._jobs)
            text = self._texts[name] = composed.as_string(conn)
        return text


_RAN = (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK)


def _check_durable(job: JobRecord, stored: Any, checkpoint: list[Any] | None) -> None:
    """The checkpoint the job row holds must be the one this walk last committed. Sub-batches
    commit without waiting for the WAL flush (``sub_batch_synchronous_commit``): a server
    crash can lose a commit the walk was told had succeeded. A walk that reconnects after
    one would go on past rows that were never changed; it stops instead, as on a lost
    connection (an ``OperationalError``), and the job resumes from the stored checkpoint."""
    if json.loads(json.dumps(checkpoint)) != stored:
        raise psycopg.OperationalError(
            f"job {job.id}'s checkpoint on the server ({stored!r}) is not the one this walk "
            f"committed last ({checkpoint!r}): a commit was lost with the server; the job "
            "resumes from the stored checkpoint"
        )


def _ran(cursor: Any) -> bool:
    """Whether the statement behind ``cursor`` (queued in a pipeline) ran to completion."""
    result = getattr(cursor, "pgresult", None) if cursor is not None else None
    return result is not None and result.status in _RAN
