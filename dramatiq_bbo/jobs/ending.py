"""How an operation ends, and when a running one must stop: shared by the pipeline's stages
and ``run_to_completion``.

``end_operation`` moves an active operation to finished (or failed when jobs failed for good);
``finish_if_exhausted`` finishes it in the transaction that records its last job, when nothing
is left to run; ``job_counts`` says how many jobs ran and failed; ``status_stop_check`` stops
a job at its next checkpoint once the operation was paused or cancelled, its class disabled,
or its organization made read-only
(what a job's end means for its operation is written with that end:
:func:`dramatiq_bbo.jobs.creation.end_and_next`). They sit below both the
inline runner (:mod:`dramatiq_bbo.jobs.inline`) and the pipeline's orchestrator and runner,
which call them, so neither has to import the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from psycopg.rows import dict_row

from ..db import REGISTRY
from ..errors import OperationNotFound
from ..pipeline.runtime import transitioned
from ..queries import query
from ..read_only.check import READ_ONLY_STOP, ask, custom_check, hold_after_stop
from ..state.records import OperationRecord, OperationStatus
from ..state.store import fetch_operation, tables_for
from .bookkeeping import finish_if_exhausted as finish_if_exhausted  # the runner's, from here

#: a check between sub-batches: a reason to stop the job at its checkpoint, or None
StopCheck = Callable[[], str | None]

#: how often, at most, a running operation's status is re-read between sub-batches (seconds)
STATUS_CHECK_SECONDS = 0.1


def job_counts(name: str, operation: OperationRecord, max_attempts: int) -> tuple[int, int]:
    _, jobs = tables_for(operation)
    with REGISTRY.connection(name) as conn:
        row = conn.execute(
            query("execution_job_counts", jobs=jobs),
            {"worker_id": operation.id, "max_attempts": max_attempts},
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def end_operation(
    name: str, operation: OperationRecord, max_attempts: int, *, failed: bool = False
) -> OperationRecord:
    """active → finished, or failed when jobs failed for good; a concurrent pause or cancel
    wins (the update only moves an active operation)."""
    if not failed:
        failed = job_counts(name, operation, max_attempts)[1] > 0
    status = OperationStatus.FAILED if failed else OperationStatus.FINISHED
    operations, _ = tables_for(operation)
    with REGISTRY.connection(name) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                query("execution_end_operation", operations=operations),
                {"status": int(status), "id": operation.id},
            ).fetchone()
        if row is None:
            return fetch_operation(conn, operation.id) or operation
    ended = OperationRecord.from_row(row)
    transitioned(ended, OperationStatus.ACTIVE)
    return ended


def status_stop_check(
    name: str, operation: OperationRecord, stop_check: StopCheck | None
) -> StopCheck:
    """The caller's stop check, plus: stop when the operation is no longer active (paused or
    cancelled meanwhile), its class was disabled (the kill switch) or its organization made
    read-only (:func:`run_state_stop_reason`). The status is read at
    the first boundary — the operation may have been paused while a runner message waited in
    the queue — then at most every STATUS_CHECK_SECONDS: an unpaced job (sub-batches of a
    few ms) reads it ten times a second, a negligible cost, and stops within 0.1 s of a pause
    (a job whose sub-batches take longer reads it at every boundary: within one sub-batch)."""
    last_read = float("-inf")

    def check() -> str | None:
        nonlocal last_read
        if stop_check is not None:
            reason = stop_check()
            if reason:
                return reason
        now = time.monotonic()
        if now - last_read < STATUS_CHECK_SECONDS:
            return None
        last_read = now
        return run_state_stop_reason(name, operation)

    return check


#: the reason a job stopped by the kill switch (``bbo.disable``) records
CLASS_DISABLED = "class_disabled"


def run_state_stop_reason(name: str, operation: OperationRecord) -> str | None:
    """Why a job of ``operation`` must stop now (or not begin): its status (paused,
    cancelled...) when it is no longer queued or active, ``class_disabled`` when its class
    is disabled, or ``read_only_organization`` when its organization is read-only (the
    operation is then held: :mod:`dramatiq_bbo.read_only.check`). One statement: the default
    check's table is read in it; a custom check is asked after it, for organization-scoped
    operations only."""
    operations, _ = tables_for(operation)
    organization = operation.organization_id
    check = custom_check()
    in_table = organization is not None and check is None
    piece = "read_only_reason_of_operation" if in_table else "read_only_not_checked"
    statement = query("steering_run_state", operations=operations, read_only_reason=query(piece))
    with REGISTRY.connection(name) as conn:
        row = conn.execute(statement, {"id": operation.id}).fetchone()
    if row is None:
        raise OperationNotFound(f"no operation {str(operation.id)!r} in database {name!r}")
    status, class_disabled, reason = OperationStatus(row[0]), bool(row[1]), row[2]
    if status not in (OperationStatus.QUEUED, OperationStatus.ACTIVE):  # queued: not begun
        return status.name.lower()
    if class_disabled:
        return CLASS_DISABLED
    if organization is not None and check is not None:  # the application's code: no
        reason = ask(check, name, organization)  # pooled connection is held while it runs
    if reason is None:
        return None
    with REGISTRY.connection(name) as conn:
        hold_after_stop(conn, operation, reason)
    return READ_ONLY_STOP
