"""The steps of a move, each one transaction in one database that also advances that
database's record of the move (:mod:`.record`), so a step is either done and recorded or not
done at all. :mod:`.move` runs them in order and decides, from the records, where a re-run
starts.

Order matters for the one promise that must hold at every instant: an operation is live in
one database at most. The target's copy is written inert (:mod:`.copy`); the source rows are
deleted only while paused and unchanged since they were copied; the copy comes alive only
after that delete committed.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from ..db import REGISTRY
from ..errors import MoveConflict, MoveTimeout
from ..queries import query
from ..state.records import OperationStatus
from . import copy
from .record import MoveRecord, Role, Step, advance, by_id, forget, insert

#: how often the drain looks again at the running jobs
_DRAIN_POLL_SECONDS = 0.1
#: past the wait, how long operations with no running job may still change before the drain
#: gives up on them standing still
_SETTLE_GRACE_SECONDS = 1.0


_ENDED = (OperationStatus.FINISHED, OperationStatus.FAILED, OperationStatus.CANCELLED)


class StaleCopy(MoveConflict):
    """The copy was made stale by a change at the source and discarded (the move, back at
    its pause, copies again)."""


def check_target(source: str, target: str, organization_id: int) -> None:
    """Refuse, before anything is written, a target lacking a table the organization's
    operations walk (:class:`~dramatiq_bbo.errors.MoveTargetNotReady`)."""
    with REGISTRY.connection(source) as conn:
        rows = conn.execute(
            query("cells_organization_tables"), {"organization_id": organization_id}
        ).fetchall()
    with REGISTRY.connection(target) as conn:
        copy.table_oids(conn, {(schema, name) for schema, name in rows})


def pause(source: str, target: str, organization_id: int, record: MoveRecord | None) -> MoveRecord:
    """Pause the organization's unfinished operations at the source and note each one's
    status before (the first status seen wins: a re-run finds them paused by itself). Starts
    the record when there is none yet. Operations enqueued since an earlier run join."""
    with REGISTRY.connection(source) as conn, conn.transaction():
        rows = conn.execute(
            query("cells_pause_organization"), {"organization_id": organization_id}
        ).fetchall()
        statuses = {str(id_): int(status) for id_, status in rows}
        if record is None:
            template = MoveRecord(
                move_id=uuid.uuid4(),
                role=Role.SOURCE,
                organization_id=organization_id,
                source_name=source,
                target_name=target,
                step=Step.PAUSED,
                operations=statuses,
            )
            return insert(conn, template)
        return advance(conn, record, Step.PAUSED, operations=statuses)


def drain(source: str, record: MoveRecord, wait_seconds: float) -> MoveRecord:
    """Wait until no job of the organization runs under a live lease at the source (each
    stops at its next checkpoint once paused; a killed worker's job once its lease expires)
    and its operations stand still (a runner's end-of-job transaction follows its job's end),
    at most ``wait_seconds``."""
    deadline = time.monotonic() + wait_seconds
    params = {"organization_id": record.organization_id}
    last_change: object = _NOT_YET
    while True:
        with REGISTRY.connection(source) as conn:
            running = conn.execute(query("cells_running_jobs"), params).fetchall()
            changed = conn.execute(query("cells_organization_settled"), params).fetchone()
            if not running and changed == last_change:
                with conn.transaction():
                    return advance(conn, record, Step.DRAINED)
        last_change = None if running else changed
        late = time.monotonic() - deadline
        if (running and late >= 0) or late >= _SETTLE_GRACE_SECONDS:
            _timeout(source, record, running, wait_seconds)
        time.sleep(_DRAIN_POLL_SECONDS)


_NOT_YET = object()


def _timeout(source: str, record: MoveRecord, running: list[Any], wait_seconds: float) -> None:
    jobs = ", ".join(f"{job_id} (operation {worker_id})" for worker_id, job_id, _ in running)
    what = f"{len(running)} job(s) still running: {jobs}" if jobs else "operations still changing"
    raise MoveTimeout(
        f"organization {record.organization_id}: {what} in database {source!r} after "
        f"{wait_seconds:g}s. Its operations stay paused there; run the same move again to "
        "finish it"
    )


def copy_to_target(source: str, target: str, record: MoveRecord, arriving_as: str) -> MoveRecord:
    """Copy the organization's operations and job history into the target, inert, with the
    target's record (one target transaction); then note the copy at the source. A copy a
    killed run already committed is not made twice: its record says so. ``arriving_as``:
    the database name the copies carry (the one the target's workers know it by)."""
    arrived = by_id_in(target, record.move_id, Role.TARGET)
    if arrived is None:
        with REGISTRY.connection(source) as conn:
            operations, jobs = copy.read_organization(conn, record.organization_id)
        hold = copy.ARRIVING_HOLD.format(source=source, move_id=record.move_id)
        with REGISTRY.connection(target) as conn, conn.transaction():
            copy.write_copy(conn, operations, jobs, target_name=arriving_as, hold_reason=hold)
            template = MoveRecord(
                move_id=record.move_id,
                role=Role.TARGET,
                organization_id=record.organization_id,
                source_name=source,
                target_name=target,
                step=Step.COPIED,
                operations=copy.restore_state(operations, record.operations),
                fingerprints=copy.fingerprints(operations),
            )
            arrived = insert(conn, template)
    with REGISTRY.connection(source) as conn, conn.transaction():
        return advance(conn, record, Step.COPIED, fingerprints=arrived.fingerprints)


def delete_at_source(source: str, target: str, record: MoveRecord) -> MoveRecord:
    """Delete the copied operations and their jobs at the source, once sure the copy is
    current: each still there is paused (or was finished) and unchanged since the copy. A
    stale copy is discarded instead, and the move goes back to its pause."""
    ids = sorted(record.fingerprints)
    with REGISTRY.connection(source) as conn, conn.transaction():
        stale = _stale(conn, ids, record)
        if not stale:
            conn.execute(query("cells_delete_jobs"), {"ids": ids})
            conn.execute(query("cells_delete_operations"), {"ids": ids})
            return advance(conn, record, Step.DELETED)
    _discard(source, target, record)
    raise StaleCopy(
        f"organization {record.organization_id}: operation(s) {', '.join(stale)} changed in "
        f"database {source!r} after they were copied (resumed by hand?); the copy was "
        "discarded and they are paused again on the next run: run the same move again"
    )


def _stale(conn: psycopg.Connection[Any], ids: list[str], record: MoveRecord) -> list[str]:
    rows = conn.execute(query("cells_lock_operations"), {"ids": ids}).fetchall()
    settled = {int(OperationStatus.PAUSED), *(int(s) for s in _ENDED)}
    return [
        str(id_)
        for id_, status, updated_at in rows
        if int(status) not in settled or record.fingerprints.get(str(id_)) != updated_at
    ]


def _discard(source: str, target: str, record: MoveRecord) -> None:
    """Drop the target's stale copy and its record, then put the source back at its pause
    (target first: a crash in between leaves a source record whose re-run copies again)."""
    with REGISTRY.connection(target) as conn, conn.transaction():
        arrived = by_id(conn, record.move_id, Role.TARGET)
        if arrived is not None:
            copy.discard_copy(conn, sorted(arrived.fingerprints))
            forget(conn, arrived)
    with REGISTRY.connection(source) as conn, conn.transaction():
        advance(conn, record, Step.PAUSED, fingerprints={})


def resume_at_target(target: str, record: MoveRecord) -> tuple[MoveRecord, list[str]]:
    """Bring the arrived operations to life as they were before the move (status and hold),
    and finish the target's record; the ids of those now unfinished and not paused."""
    with REGISTRY.connection(target) as conn, conn.transaction():
        arrived = by_id(conn, record.move_id, Role.TARGET)
        if arrived is None:
            raise MoveConflict(f"move {record.move_id}: the target holds no record of its copy")
        if arrived.at_least(Step.RESUMED):
            return arrived, []
        live = []
        for id_, before in sorted(arrived.operations.items()):
            conn.execute(query("cells_resume_operation"), {"id": id_, **before})
            if int(before["status"]) in (OperationStatus.QUEUED, OperationStatus.ACTIVE):
                live.append(id_)
        return advance(conn, arrived, Step.RESUMED, finishes=True), live


def finish(source: str, record: MoveRecord) -> MoveRecord:
    """Close the source's record: it stays as the organization's forwarding note."""
    with REGISTRY.connection(source) as conn, conn.transaction():
        return advance(conn, record, Step.FINISHED, finishes=True)


def by_id_in(name: str, move_id: uuid.UUID, role: Role) -> MoveRecord | None:
    with REGISTRY.connection(name) as conn:
        return by_id(conn, move_id, role)
