"""Steering an operation by hand: retry its failed jobs, change its sizes live, finalize it,
and the kill switch per class — the functions every operator surface calls.

Each call checks its input before it writes anything (a typed error from
:mod:`dramatiq_bbo.errors`, one line, naming the value), takes the operation's row lock for
its change (lock order: the operation row, then its jobs), and logs one event naming who did
it (``by``). ``pause``, ``resume`` and ``cancel`` live with the status rules in
:mod:`dramatiq_bbo.jobs.control` and the kill switch in :mod:`.kill_switch`; both are
importable from here. ``finalize`` runs an operation and lives apart, in :mod:`.finalize`
(import it from there or as ``bbo.finalize``): it stands on the inline runner, one layer
above everything here.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidBatchSizes, InvalidTransition, OperationNotFound
from ..jobs.control import cancel, pause, resume
from ..logs import OPERATION_RETRIED, OPERATION_UPDATED, event, operation_fields
from ..migrations import requires_schema
from ..operators import operator
from ..pipeline.messages import STAGE_TOKEN_PATTERN
from ..pipeline.runtime import transitioned
from ..queries import query
from ..settings import check_value
from ..state.records import OperationRecord, OperationStatus
from ..state.store import fetch_operation, parse_operation_id, tables_for
from .kill_switch import DisabledClass, disable, disabled_classes, enable

__all__ = [
    "DisabledClass",
    "cancel",
    "disable",
    "disabled_classes",
    "enable",
    "pause",
    "resume",
    "retry",
    "update",
]

#: statuses whose failed jobs retry() may requeue (a cancelled operation stays cancelled, a
#: finished one has no failed job left)
_RETRYABLE = (
    OperationStatus.ACTIVE,
    OperationStatus.PAUSED,
    OperationStatus.FAILED,
)

#: the sizes update() changes, in the order they are reported
SIZES = ("batch_size", "sub_batch_size", "pause_ms", "interval_seconds")


@requires_schema
def retry(
    operation_id: Any, *, by: str | None = None, database: str | None = None
) -> OperationRecord:
    """Requeue the failed jobs of the operation, each from its checkpoint with a fresh set of
    attempts; a failed operation becomes active again (queued if it never started) and goes
    on from its stored cursor. InvalidTransition when it has no failed job, or is queued,
    cancelled or finished; nothing is written then."""
    who = operator(by)
    key = parse_operation_id(operation_id)
    name = database or DEFAULT_DATABASE
    operations, jobs = tables_for(key)
    with REGISTRY.connection(name) as conn, conn.transaction():
        before = _locked(conn, key, name)
        if before.status not in _RETRYABLE:
            raise InvalidTransition(
                f"cannot retry operation {key}: it is {before.status.name.lower()} (retry "
                "applies to the failed jobs of an active, paused or failed operation)"
            )
        requeued = conn.execute(
            query("steering_requeue_failed_jobs", jobs=jobs), {"worker_id": key}
        ).fetchall()
        if not requeued:
            raise InvalidTransition(f"cannot retry operation {key}: it has no failed job")
        after = before
        if before.status == OperationStatus.FAILED:
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(
                    query("steering_reactivate", operations=operations), {"id": key}
                ).fetchone()
            assert row is not None  # the row is locked and failed
            after = OperationRecord.from_row(row)
    event(
        OPERATION_RETRIED,
        **operation_fields(after),
        by=who,
        previous_state=before.status.name.lower(),
        new_state=after.status.name.lower(),
        requeued_jobs=len(requeued),
    )
    if after.status != before.status:
        transitioned(after, before.status)
    _wake(after)
    return after


@requires_schema
def update(
    operation_id: Any,
    *,
    batch_size: int | None = None,
    sub_batch_size: int | None = None,
    pause_ms: int | None = None,
    interval_seconds: float | None = None,
    by: str | None = None,
    database: str | None = None,
) -> OperationRecord:
    """Change the sizes of an unfinished operation, from its next job on (a running job keeps
    the sizes it started with; a job waiting to run again — pending, or failed with a retry
    ahead — takes the new sub-batch size and pause too). Each value is checked against the
    bounds of the setting of the same name; a sub-batch larger than the batch (given, or
    stored) is refused. The optimizer goes on adjusting ``batch_size`` after the next job,
    from the value given: its range (``min_batch_size``..``max_batch_size``) widens to
    include it."""
    given = {
        "batch_size": batch_size,
        "sub_batch_size": sub_batch_size,
        "pause_ms": pause_ms,
        "interval_seconds": interval_seconds,
    }
    changes = _checked_sizes(given)
    who = operator(by)
    key = parse_operation_id(operation_id)
    name = database or DEFAULT_DATABASE
    with REGISTRY.connection(name) as conn, conn.transaction():
        before = _locked(conn, key, name)
        after, waiting = _write_sizes(conn, before, changes)
    event(
        OPERATION_UPDATED,
        **operation_fields(after),
        by=who,
        **{size: getattr(after, size) for size in changes},
        **{f"previous_{size}": getattr(before, size) for size in changes},
        waiting_jobs_updated=waiting,
    )
    return after


def _write_sizes(
    conn: psycopg.Connection[Any], before: OperationRecord, changes: dict[str, Any]
) -> tuple[OperationRecord, int]:
    """Under the operation's row lock: refuse an ended operation or inverted sizes, write the
    operation's sizes, let a shorter interval apply without waiting out the old one, then
    write its waiting jobs' sub-batch size and pause. The record after, and how many waiting
    jobs changed."""
    key = before.id
    if not before.unfinished:
        raise InvalidTransition(
            f"cannot update operation {key}: it is {before.status.name.lower()} "
            "(update applies to queued, active and paused operations)"
        )
    values = {size: getattr(before, size) for size in SIZES} | changes
    if values["sub_batch_size"] > values["batch_size"]:
        raise InvalidBatchSizes(
            f"sub_batch_size {values['sub_batch_size']} would be larger than batch_size "
            f"{values['batch_size']}; a sub-batch is a slice of a batch"
        )
    operations, jobs = tables_for(before)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("steering_update_sizes", operations=operations), {"id": key, **values}
        ).fetchone()
    assert row is not None  # the row is locked
    if changes.get("interval_seconds", before.interval_seconds) < before.interval_seconds:
        conn.execute(
            query("steering_release_waiting_stage", operations=operations, jobs=jobs),
            {"id": key, "stage_token_pattern": STAGE_TOKEN_PATTERN},
        )
    waiting = 0
    if {"sub_batch_size", "pause_ms"} & changes.keys():
        waiting = len(
            conn.execute(
                query("steering_update_waiting_jobs", jobs=jobs), {"worker_id": key, **values}
            ).fetchall()
        )
    return OperationRecord.from_row(row), waiting


def _checked_sizes(given: dict[str, Any]) -> dict[str, Any]:
    """The sizes given, each within its setting's bounds; InvalidBatchSizes if none is."""
    changes = {
        size: check_value(size, value, origin=f"update({size}=...)", error=InvalidBatchSizes)
        for size, value in given.items()
        if value is not None
    }
    if not changes:
        raise InvalidBatchSizes(
            "nothing to update: give at least one of batch_size, sub_batch_size, pause_ms, "
            "interval_seconds"
        )
    return changes


def _locked(conn: psycopg.Connection[Any], key: Any, name: str) -> OperationRecord:
    record = fetch_operation(conn, key, for_update=True)
    if record is None:
        raise OperationNotFound(f"no operation {str(key)!r} in database {name!r}")
    return record


def _wake(record: OperationRecord) -> None:
    """Start the requeued jobs now when the pipeline is set up here (else the scheduler's
    next pass does)."""
    from ..pipeline.wake import wake

    wake(record)
