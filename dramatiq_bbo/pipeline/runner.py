"""The runner stage: run one dispatched job, then chain the operation's next orchestrator.

The job itself runs through :func:`dramatiq_bbo.jobs.run.run_job` (sub-batch transactions
with their checkpoints). Between sub-batches the runner stops the job cleanly at its
checkpoint when the operation was paused or cancelled, when the job's time budget is spent,
when a middleware asks for it (``between_sub_batches``: health), or when the worker is
shutting down (not a failed attempt).

Afterwards, in one transaction with the operation row locked: the batch optimizer sets the
next batch size from the recent successful jobs (unless an operator set one during the job),
an operation whose range that job finished is finished at once (and the size the optimizer
reached is kept for its configuration's next operation, :mod:`dramatiq_bbo.jobs.learned_sizes`),
an operation that fails too often is failed, and otherwise the slot this job frees is refilled
in the same transaction, in the dispatch order (:mod:`.refill`): the operations already waiting
for capacity get it first, and this operation goes back to the pool (its stage lease released),
due one interval after this job *started* (so a job that takes 95% of the interval leaves the
database 5% idle, as the optimizer's efficiency assumes). Only when nothing else is waiting does
it keep the slot: its next orchestrator message is written, due then, under a fresh stage lease
covering the wait — or, already due, the orchestrator's decision is taken right there
(:func:`~.orchestrator.decide`, same gates) and the next job is dispatched to this very actor
call, which runs it without a message hop, as long as the call stays within the job's time
budget (past it, a runner message is written instead).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .. import clock
from ..db import REGISTRY
from ..errors import InvalidTransition, LeaseLost
from ..jobs import retries, sizing
from ..jobs.ending import end_operation, finish_if_exhausted, job_counts, status_stop_check
from ..jobs.optimizer import OptimizerDecision
from ..jobs.run import ClaimGivenUp, JobOutcome, run_job
from ..logs import RUNNER_SKIPPED, event, logger
from ..queries import query
from ..reconnect import CONNECTION_LOST, retrying
from ..state.records import JobRecord, JobStatus, OperationRecord, OperationStatus
from ..state.store import (
    OperationRef,
    fetch_operation,
    operation_ref,
    tables_for,
)
from . import shutdown
from .handoff import Take, send_orchestrator, take_lease
from .messages import ORCHESTRATOR
from .middleware_hold import held_by_middleware
from .orchestrator import (
    Decision,
    Started,
    call_back_after_hold,
    decide,
    dispatch_waiting,
    first_in_line,
    release,
)
from .refill import free_slots
from .runtime import current, transitioned
from .shutdown import shutting_down
from .unknown_class import give_back_if_unknown, hold_before_run, undispatch

__all__ = ["chain", "run", "shutting_down"]


def run(
    database: str, operation_id: Any, job_id: Any, token: str | None = None, gate: bool = False
) -> JobOutcome | None:
    """Handle one runner message; a job another runner holds, or an operation whose stage
    lease moved on from ``token`` (run_to_completion took it over), makes it a no-op (None).
    The next jobs its chain dispatches to this call run here too, within the job's budget.
    ``gate``: dispatched outside a worker (enqueue's one hop), the job first meets this
    worker's ``before_job`` (:class:`_Start`)."""
    ref = operation_ref(database, operation_id)  # parsed once: its scope and tables
    operation: OperationRecord | None = None
    called = time.monotonic()
    outcome: JobOutcome | None = None
    while True:
        ran = _run_one(database, ref, job_id, token, called, operation, gate)
        if ran is None:
            return outcome
        outcome, follow = ran
        if follow is None or follow.job is None:
            return outcome
        job_id, token, operation, gate = follow.job.id, follow.token, follow.operation, False


class _Start:
    """A runner message's job, before the runner knows its operation: the claim reads the
    operation (row-locked) and asks :meth:`gate` before it claims the job, in its own
    transaction. The gate gives the job back, unclaimed, when this worker cannot import the
    operation's class (:func:`~.unknown_class.give_back_if_unknown`), and — for a job an
    enqueue dispatched (``middleware``) — when this worker's middleware objects: the job goes
    back to pending without a lease (no attempt spent) and the operation is called back when
    its hold ends, as an orchestrator holding it would. The stop check is made from the
    operation the claim read."""

    def __init__(self, database: str, job_id: Any, started: float, middleware: bool) -> None:
        self.database, self.job_id, self.started = database, job_id, started
        self.middleware = middleware and bool(current().middleware)
        self.operation: OperationRecord | None = None
        self._check: Any = None

    def gate(self, conn: psycopg.Connection[Any], operation: OperationRecord) -> bool:
        self.operation = operation
        self._check = _stop_check(self.database, operation, self.started, _budget(operation))
        if not operation.unfinished:  # the claim decides; the stop check ends the job
            return False
        if give_back_if_unknown(conn, self.database, operation, self.job_id):
            return True
        if not self.middleware or not held_by_middleware(conn, operation):
            return False
        if undispatch(conn, operation, self.job_id):  # else a stale message: not ours to run
            call_back_after_hold(conn, self.database, operation)
        return True

    def stop_check(self) -> str | None:
        return self._check() if self._check is not None else None


def _run_one(
    database: str,
    ref: OperationRef,
    job_id: Any,
    token: str | None,
    called: float,
    known: OperationRecord | None = None,
    gate: bool = False,
) -> tuple[JobOutcome, Started | None] | None:
    """Run one job and chain; the outcome, and the next job when dispatched to this call.
    ``known``: the operation as just read in this call (else the claim reads it)."""
    key, job_key, started = ref.id, _job_key(job_id), time.monotonic()
    start = _Start(database, job_key, started, gate) if known is None else None
    if known is not None and hold_before_run(database, known, job_key):  # class unknown here
        return None
    try:
        outcome = run_job(
            key,
            job_key,
            stop_check=start.stop_check if start else _own_stop_check(database, known, started),
            database=database,
            stage_token=token,
            job_check=current().between_sub_batches,  # health, and the application's middleware
            gate=start.gate if start else None,
        )
    except ClaimGivenUp:
        return None
    except InvalidTransition as exc:
        event(RUNNER_SKIPPED, operation_id=str(key), reason=str(exc))
        return None
    except LeaseLost:
        logger.warning("job %s of operation %s was taken over by another runner", job_id, key)
        return None
    operation = known or (start.operation if start else None)
    budget = _budget(operation) if operation is not None else 1.0
    inline = time.monotonic() - called < budget  # the next job may run in this call
    # at once when Postgres is back, not after the lease and the scheduler's next tick
    follow = retrying(
        f"chaining operation {key}",
        lambda: chain(database, ref, outcome, started, held=token, inline=inline),
        settings=REGISTRY.settings,
    )
    return outcome, follow


def _own_stop_check(database: str, operation: Any, started: float) -> Any:
    return _stop_check(database, operation, started, _budget(operation))


def _job_key(job_id: Any) -> Any:
    text = str(job_id)
    return int(text) if text.isdecimal() else text


def _budget(operation: OperationRecord) -> float:
    """A job's time budget (seconds): its share of the interval, at least one second."""
    settings = REGISTRY.settings
    interval = float(operation.interval_seconds)
    budget = (
        interval * float(settings.job_budget_fraction)
        if interval > 0
        else float(settings.min_job_budget_seconds)
    )
    return max(budget, 1.0)


def _stop_check(database: str, operation: OperationRecord, started: float, budget: float) -> Any:
    """Worker shutdown and the job's time budget, then the operation's status (see
    :func:`~dramatiq_bbo.jobs.ending.status_stop_check`); the middleware's
    ``between_sub_batches`` is asked after these (``run_job``'s ``job_check``)."""

    def pipeline_check() -> str | None:
        if shutting_down.is_set():
            return "worker_shutdown"
        if time.monotonic() - started >= budget:
            return "time_budget"
        return None

    return status_stop_check(database, operation, pipeline_check)


def chain(
    database: str,
    operation_id: OperationRef | Any,
    outcome: JobOutcome,
    started: float,
    *,
    held: str | None = None,
    inline: bool = False,
) -> Started | None:
    """Optimizer, failure threshold, the freed slot refilled, and the operation's next step
    (:func:`_carry_on`), in one transaction.

    The operation's stage lease passes from ``held`` (the runner message's) to the next
    stage only if this stage still holds it (or nobody does): when run_to_completion took
    the operation over meanwhile, nothing is sent. In a stopping worker the message is kept
    and sent once this process stopped consuming (:mod:`.shutdown`). ``inline``: a job
    dispatched to go on at once gets no runner message; the caller runs it (returned)."""
    settings = REGISTRY.settings
    max_attempts = int(settings.max_attempts)
    fail = False
    ended: OperationRecord | None = None
    follow: Started | None = None
    refilled: list[Started] = []
    with REGISTRY.connection(database) as conn, conn.transaction():
        operation = fetch_operation(conn, operation_id, for_update=True)
        active = operation is not None and operation.status == OperationStatus.ACTIVE
        if operation is not None and active:
            ended, fail = _judge(conn, database, operation, outcome, max_attempts)
        if operation is not None and active and ended is None and not fail:
            delay = _next_delay(operation, outcome, started)
            follow = _carry_on(conn, database, operation, delay, held, inline, refilled)
        else:  # the slot this job frees goes to the operations waiting
            refilled = dispatch_waiting(conn, database, free_slots(conn, database))
    for other in refilled:
        other.after_commit(database)
    if ended is not None:
        transitioned(ended, OperationStatus.ACTIVE)
    if fail and operation is not None:
        end_operation(database, operation, max_attempts, failed=True)
    if follow is not None:
        follow.after_commit(database)
        if follow.decision == Decision.DISPATCHED and not inline:
            follow = None  # its runner message carries it
    return follow


def _judge(
    conn: psycopg.Connection[Any],
    database: str,
    operation: OperationRecord,
    outcome: JobOutcome,
    max_attempts: int,
) -> tuple[OperationRecord | None, bool]:
    """After the job: the operation ended by it (its range done), or whether it fails."""
    ended = (
        _after_success(conn, operation, outcome) if outcome.status == JobStatus.SUCCEEDED else None
    )
    if ended is None and retries.failed_for_good(outcome.job, outcome.timed_out, max_attempts):
        total, failed = job_counts(database, operation, max_attempts)
        return None, retries.operation_should_fail(total, failed)
    return ended, False


def _carry_on(
    conn: psycopg.Connection[Any],
    database: str,
    operation: OperationRecord,
    delay: float,
    held: str | None,
    inline: bool,
    refilled: list[Started],
) -> Started | None:
    """The operation's next step once its job ended, the capacity lock taken: the freed slot
    first to the operations waiting for one; then this operation back to the pool, or — a slot
    left — its next orchestrator message due in ``delay``, or (already due) its next job
    dispatched here (what :func:`~.orchestrator.decide` did, or None)."""
    token = take_lease(conn, operation, delay=delay, take=Take.PASSED, held=held)
    # None: another stage holds the operation (run_to_completion) and carries it on
    if token is None or shutting_down.is_set():
        refilled.extend(dispatch_waiting(conn, database, free_slots(conn, database)))
        if token is not None:
            shutdown.defer(database, ORCHESTRATOR, (database, str(operation.id), token), delay)
        return None
    first, started = first_in_line(conn, database, operation.id)
    refilled.extend(started)
    if not first:
        release(conn, operation, token)  # due again one interval after this job started
        return None
    if delay > 0:
        send_orchestrator(conn, database, operation.id, token, delay)
        return None
    return decide(conn, database, operation.id, token, send=not inline)


def _after_success(
    conn: psycopg.Connection[Any], operation: OperationRecord, outcome: JobOutcome
) -> OperationRecord | None:
    """After a successful job: the optimizer's next size, then — when that job was the last
    one, nothing left to run — the end of the operation, now rather than one interval later,
    with the size the optimizer reached kept for its configuration's next operation."""
    decision = None
    if sizing.sized_by_optimizer(operation, outcome.job):
        decision = _optimize(conn, operation)
    ended = finish_if_exhausted(conn, operation)
    if ended is not None and decision is not None:
        sizing.keep_learned(conn, operation, decision)
    return ended


def _next_delay(operation: OperationRecord, outcome: JobOutcome, started: float) -> float:
    if outcome.interrupted_reason in ("worker_shutdown", CONNECTION_LOST):
        return 0.0  # the job's range is not done: resume it now
    elapsed = time.monotonic() - started
    delay = max(0.0, float(operation.interval_seconds) - elapsed)
    if operation.on_hold_until is not None:
        # Held by a health stop: come back when the hold ends rather than at the next
        # minute tick (the orchestrator re-asks the indicators then).
        held = (operation.on_hold_until - clock.now()).total_seconds()
        delay = max(delay, held + 0.05)
    return delay


def _optimize(
    conn: psycopg.Connection[Any], operation: OperationRecord
) -> OptimizerDecision | None:
    """The optimizer's decision after a job, written on the operation (None if it failed)."""
    statement, params = sizing.recent_jobs_query(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        recent = [JobRecord.from_row(row) for row in cur.execute(statement, params).fetchall()]
    decision = sizing.decide(operation, recent)
    if decision is not None and decision.changed:
        operations, _ = tables_for(operation)
        conn.execute(
            query("pipeline_set_batch_size", operations=operations),
            {"batch_size": decision.new, "partition": operation.partition, "id": operation.id},
        )
    return decision
