"""Claiming a job to run: one more attempt under a lease, or a takeover of an interrupted one.

Every claim runs in one short transaction that locks the **operation row first**, then writes
the job row: the one lock order of the library (docs/pipeline.md, "Lock order"), so a claim
never deadlocks with an orchestrator, which locks the operation row and then dispatches a job.
Holding the operation row also makes two rules hold whoever claims (a pipeline runner,
``run_to_completion``, a direct ``run_job``):

- one job per operation: a job is not claimed while another job of its operation runs under
  a live lease;
- a stage message gives way: a runner message (``stage_token`` given) does not claim while
  another stage holds the operation's live stage lease (``run_to_completion`` took it over).

A running job whose lease expired is taken over: that counts an interruption, not an attempt
(up to ``max_interruptions``). Also here: a timed-out job's sub-batch shrunk before it is
claimed again (``prepare_retry``), and the job a lease owner already holds (``recover_claimed``).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import REGISTRY
from ..errors import InvalidTransition, OperationNotFound
from ..queries import query
from ..state.records import JobRecord, JobStatus, OperationRecord
from ..state.store import parse_operation_id, tables_for
from ..walk.statements import pipelined
from . import retries


def new_owner() -> str:
    """A lease owner unique to this run of a job."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def claim_params(
    operation_id: Any, job_id: Any, owner: str, stage_token: str | None = None
) -> dict[str, Any]:
    """Parameters of ``execution_claim_job`` and ``execution_touch_claimed_operation``."""
    settings = REGISTRY.settings
    return {
        "worker_id": operation_id,
        "id": job_id,
        "lease_owner": owner,
        "lease_seconds": float(settings.lease_seconds),
        "max_interruptions": int(settings.max_interruptions),
        "stage_token": stage_token,
    }


def claim(
    conn: psycopg.Connection[Any],
    name: str,
    operation_id: Any,
    job_id: Any,
    owner: str,
    stage_token: str | None = None,
) -> tuple[OperationRecord, JobStatus, JobRecord]:
    """Lock and read the operation, then claim its job, in one transaction and one round
    trip (the claim and the operation's ``last_run_at`` apply only if the operation exists)."""
    key = parse_operation_id(operation_id)
    operations, jobs = tables_for(key)
    params = claim_params(key, job_id, owner, stage_token)
    with pipelined(conn), conn.transaction():
        found = conn.cursor(row_factory=dict_row).execute(
            query("operation_by_id_for_update", operations=operations, jobs=jobs), {"id": key}
        )
        before = conn.cursor(row_factory=dict_row).execute(
            query("execution_job_by_id", jobs=jobs), params
        )
        claimed = conn.cursor(row_factory=dict_row).execute(
            query("execution_claim_job", operations=operations, jobs=jobs), params
        )
        touch = query("execution_touch_claimed_operation", operations=operations, jobs=jobs)
        conn.execute(touch, params)
    row = found.fetchone()
    if row is None:
        raise OperationNotFound(f"no operation {operation_id!s} in database {name!r}")
    operation = OperationRecord.from_row(row)
    previous, job = before.fetchone(), claimed.fetchone()
    if previous is None:
        raise InvalidTransition(f"operation {operation.id} has no job {job_id!s}")
    if job is None and previous["lease_owner"] == owner:
        job = previous  # claimed by an earlier try whose answer was lost with its connection
    if job is None:
        raise InvalidTransition(_refusal(operation, previous, job_id, stage_token))
    return operation, JobStatus(previous["status"]), JobRecord.from_row(job)


def _refusal(
    operation: OperationRecord, previous: dict[str, Any], job_id: Any, stage_token: str | None
) -> str:
    status = JobStatus(previous["status"])
    text = f"job {job_id!s} of operation {operation.id} cannot run: it is {status.name.lower()}"
    if status == JobStatus.RUNNING:
        return text + " under a live lease"
    if stage_token is not None and operation.lease_owner not in (None, stage_token):
        return text + ", and another stage holds the operation (its stage lease moved on)"
    return text + ", and another job of the operation runs under a live lease"


def recover_claimed(
    conn: psycopg.Connection[Any], operation: OperationRecord, owner: str
) -> JobRecord | None:
    """The job ``owner`` holds, if an ``end_and_next`` (:mod:`dramatiq_bbo.jobs.creation`)
    whose answer was lost with its connection committed it (so the runner goes on with it
    instead of waiting out its lease)."""
    _, jobs = tables_for(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("execution_job_by_lease_owner", jobs=jobs),
            {"worker_id": operation.id, "lease_owner": owner},
        ).fetchone()
    return JobRecord.from_row(row) if row is not None else None


def prepare_retry(
    conn: psycopg.Connection[Any], operation: OperationRecord, job: JobRecord
) -> JobRecord:
    """Before re-running a job whose last attempt timed out: shrink its sub-batch size."""
    if job.status != JobStatus.FAILED or not retries.timed_out(job):
        return job
    size = retries.shrunk_sub_batch_size(job.sub_batch_size, operation.sub_batch_size)
    if size == job.sub_batch_size:
        return job
    _, jobs = tables_for(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("execution_set_job_sub_batch_size", jobs=jobs),
            {"sub_batch_size": size, "partition": job.partition, "id": job.id},
        ).fetchone()
    return JobRecord.from_row(row) if row else job
