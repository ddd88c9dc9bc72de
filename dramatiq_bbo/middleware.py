"""``Middleware``: the one way to plug into the pipeline, dramatiq-style.

Subclass :class:`Middleware`, override the hooks you need (every hook is a no-op here) and
register instances with ``bbo.setup(broker, middleware=[...])``. ``middleware=None`` installs
:func:`dramatiq_bbo.default_middleware` (the health throttling); a list replaces the defaults,
so ``[*bbo.default_middleware(), Mine()]`` extends them and ``[]`` runs with none.

Hooks run in the process whose ``setup()`` installed them, in list order, on the thread that
does the work they surround. Two kinds:

- **gates** — :meth:`~Middleware.before_job` and :meth:`~Middleware.between_sub_batches` —
  can stop work; the first middleware that answers wins and the rest are not asked. An
  exception raised by a gate is not swallowed: before a job it fails the orchestrator's
  message (its transaction rolls back, no job starts, the scheduler re-drives the operation);
  between sub-batches it fails the job's attempt like an exception in ``perform()``.
  ``run_to_completion`` does not ask the gates: its caller asked for the work and stops it
  with its own ``stop_check``.
- **notifications** — :meth:`~Middleware.after_enqueue`, :meth:`~Middleware.after_job`,
  :meth:`~Middleware.after_transition`, :meth:`~Middleware.after_hold` — tell what already
  happened. An exception there is logged and ignored: the fact stands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from .state.records import JobRecord, OperationRecord, OperationStatus

if TYPE_CHECKING:  # a type only: middleware sits below the job runner that calls it
    from .jobs.outcomes import JobOutcome


class Middleware:
    """Base class of dramatiq-bbo middleware; every hook does nothing."""

    def after_enqueue(self, operation: OperationRecord) -> None:
        """A new operation was enqueued and its transaction committed.

        Runs in the process that called ``enqueue`` (web or worker, the thread that called
        it), after the pipeline woke the operation — a worker may already be running it. Not
        called for a duplicate (enqueue returned the unfinished twin), nor when enqueue joined
        the caller's transaction (``connection=``): it cannot know whether that commits."""

    def before_job(
        self, conn: psycopg.Connection[Any], operation: OperationRecord
    ) -> bool | str | None:
        """Whether the orchestrator may start the operation's next job.

        Runs in a worker, on the orchestrator's thread, inside its transaction on ``conn``
        with the operation row locked (``FOR UPDATE``): keep it short, and write on ``conn``
        only what must commit with the orchestrator's decision. Asked each time the
        orchestrator would go on with the operation (also the last time, when it finds the
        range done and finishes the operation).

        Return None or False to go on. A string is a reason to hold instead: the operation
        is held for ``health_hold_seconds`` with that ``hold_reason`` (seen in
        ``bbo.get_operation``) and called back when the hold ends. True holds off too, but
        leaves the why to the middleware, which recorded it itself (the health middleware
        holds the operation its own way); the operation is then called back when a hold it
        wrote ends, or by the scheduler's next pass."""
        return None

    def between_sub_batches(self, operation: OperationRecord, job: JobRecord) -> str | None:
        """A reason to stop the running job at its checkpoint, or None to go on.

        Runs in a worker, on the runner's thread, after each committed sub-batch but the
        last. The next sub-batch's transaction may already be open on the runner's own
        connection (it began in the same round trip as the commit, and holds no row lock
        yet); a reason to stop rolls it back. Use your own connection here. ``job`` is the
        job as claimed when it started (its checkpoint is not refreshed between
        sub-batches). The reason ends the job cleanly: it goes back to pending at its
        checkpoint, with no attempt spent, and its ``interrupted_reason`` is the reason;
        the runner chains the operation's next orchestrator message as usual (hold the
        operation, or answer :meth:`before_job`, to keep it from starting again).
        Asked between every sub-batch: keep it cheap."""
        return None

    def after_job(self, operation: OperationRecord, outcome: JobOutcome) -> None:
        """One run of a job ended and was recorded on its row: succeeded, failed (an
        attempt spent), or given back at its checkpoint (``outcome.interrupted_reason``).

        Runs on the thread that ran the job: a worker's runner, or ``run_to_completion``'s
        caller. Not called when the job was taken over by another runner meanwhile."""

    def after_hold(self, operation: OperationRecord, *, reason: str, indicator: str | None) -> None:
        """The operation was put on hold (``on_hold_until``, ``hold_reason``): by a health
        stop — ``indicator`` names the indicator that said stop — or by a middleware's
        :meth:`before_job` reason (``indicator`` is None).

        Runs on the thread that held it: a worker's runner between sub-batches (the hold
        committed), or its orchestrator, inside the transaction that commits the hold with
        its decision (do not write there). Not called for the holds the pipeline puts on a
        table it cannot run (an unknown class, a table being changed)."""

    def after_transition(
        self,
        operation: OperationRecord,
        previous_status: OperationStatus,
        new_status: OperationStatus,
    ) -> None:
        """The operation's status changed and the change committed: queued → active (its
        first job), active → finished or failed, and a pause, resume or cancel.

        Runs on the thread that made the change: a worker's orchestrator or runner,
        ``run_to_completion``'s caller, or whoever called ``pause``/``resume``/``cancel``
        (with the middleware that process's ``setup`` installed: none without it)."""
