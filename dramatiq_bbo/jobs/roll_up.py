"""The job's counts that a failed walk left on its job row, rolled up onto the operation.

A walk adds its job's counters to the operation's row at most once a second and when it ends
(:mod:`dramatiq_bbo.walk.checkpoint`). A ``perform()`` that raises between two roll-ups leaves
the counts of its last committed sub-batches on the job row alone; the end of the job takes
them over to the operation here, before the job's end is recorded, so the operation's counters
are whole whenever no job of it runs. (A runner killed outright leaves them until its job runs
again; the views add them meanwhile.)
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..queries import query
from ..state.records import JobRecord, OperationRecord
from ..state.store import tables_for
from ..walk.statements import pipelined


def roll_up_leftovers(
    conn: psycopg.Connection[Any], operation: OperationRecord, job: JobRecord, owner: str
) -> None:
    """Move the job's counts the operation lacks onto it (operation row locked first), in one
    transaction on ``conn`` (autocommit); nothing when this runner lost the job's lease."""
    operations, jobs = tables_for(operation)
    params = {
        "partition": operation.partition,
        "id": operation.id,
        "job_partition": job.partition,
        "job_id": job.id,
        "lease_owner": owner,
    }
    with conn.transaction():
        with pipelined(conn):
            conn.execute(query("batching_lock_operation", operations=operations), params)
            taken = conn.execute(query("batching_take_unrolled", jobs=jobs), params)
        row = taken.fetchone()
        if row is not None:
            counts = {"processed": int(row[0]), "affected": int(row[1])}
            conn.execute(query("batching_add_counters", operations=operations), params | counts)
