"""Splitting a job that timed out on its last attempt into two halves.

Shrinking the sub-batch did not help such a job, so what is left of its range (after its
checkpoint) is cut at the median row into two pending jobs with a smaller sub-batch, and the
parent is marked ``split_into`` (it then no longer counts as failed for good; a range too
small to split is marked ``split_into: []`` and stays failed). Both runners use this module:
the pipeline's orchestrator (under the operation's row lock it already holds) and
``run_to_completion()`` (through :func:`split_next`, which takes that lock itself).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..queries import query
from ..state.records import JobRecord, OperationRecord
from ..state.store import fetch_operation, insert_job, tables_for
from ..walk.keyset import split_range
from . import retries
from .instance import build_operation


def splittable_job(
    conn: psycopg.Connection[Any], operation: OperationRecord, max_attempts: int
) -> JobRecord | None:
    """The oldest job that timed out on its last attempt and was not split yet."""
    _, jobs = tables_for(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("splitting_splittable_job", jobs=jobs),
            {"worker_id": operation.id, "max_attempts": max_attempts},
        ).fetchone()
    return None if row is None else JobRecord.from_row(row)


def split_job(
    conn: psycopg.Connection[Any], operation: OperationRecord, job: JobRecord
) -> list[JobRecord]:
    """Replace ``job`` by two pending halves of what it left; [] when fewer than two rows are
    left. Call it in a transaction holding the operation's row lock."""
    _, keyset = build_operation(operation, job)
    ranges = split_range(
        conn,
        keyset,
        min_cursor=job.min_cursor,
        max_cursor=job.max_cursor,
        checkpoint=job.checkpoint_cursor,
    )
    _, jobs = tables_for(operation)
    if ranges is None:
        conn.execute(
            query("splitting_mark_split", jobs=jobs),
            {"children": json.dumps([]), "partition": job.partition, "id": job.id},
        )
        return []
    children: list[JobRecord] = []
    size = retries.shrunk_sub_batch_size(job.sub_batch_size, operation.sub_batch_size)
    for low, high in ranges:
        row = insert_job(
            conn,
            operation,
            partition=job.partition,
            batch_size=max(job.batch_size // 2, size),
            sub_batch_size=size,
            pause_ms=job.pause_ms,
            range_=(low, high),
            metrics={"split_from": str(job.id)},
        ).fetchone()
        assert row is not None
        children.append(JobRecord.from_row(row))
    conn.execute(
        query("splitting_mark_split", jobs=jobs),
        {
            "children": json.dumps([str(c.id) for c in children]),
            "partition": job.partition,
            "id": job.id,
        },
    )
    return children


def split_next(
    conn: psycopg.Connection[Any], operation: OperationRecord, max_attempts: int
) -> JobRecord | None:
    """Split the operation's next splittable job, in one transaction under the operation's
    row lock (so two runners never split one job twice); the first half, or None when no
    job was split."""
    with conn.transaction():
        if fetch_operation(conn, operation.id, for_update=True) is None:
            return None
        job = splittable_job(conn, operation, max_attempts)
        if job is None:
            return None
        halves = split_job(conn, operation, job)
    return halves[0] if halves else None
