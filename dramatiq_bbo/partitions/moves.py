"""Unfinished operations, and their unfinished jobs, moved into the current partition while
idle, so that an older partition empties of live work and can be retired.

Messages and checkpoints address rows by ``(partition, id)``: a job's checkpoint
(``WHERE j.partition = %s AND j.id = %s``), the heartbeat, the runner's end of job and the
stage lease writes all use the partition the running code read. Moving a row under them
would make those statements miss it. So only an **idle** operation moves: no live stage lease
(no orchestrator message owns it, no ``run_to_completion`` holds it, no runner is between
two jobs of it) and no job running or dispatched under a live lease. The operation row is
locked ``SKIP LOCKED``: a row some stage holds right now is left for the next run. Everything
that finds an operation or a job afresh does so by id in any partition (the orchestrator's
lock, the runner's claim, ``get_operation``), so a moved row is found where it now is; one
that waits for the row lock of a move under way gets Postgres's serialization failure (the
row moved to another partition) and is retried, and ``run_to_completion`` reads a record it
finds moved again (:func:`dramatiq_bbo.jobs.inline._take_stage`).

The move is an ``UPDATE`` of the partition key (Postgres moves the row between partitions),
one operation per short transaction: the operation row locked first, then its jobs (the lock
order of docs/pipeline.md). Every other column — cursors, counters, sizes, status, hold —
is unchanged. Succeeded jobs stay behind as history; pending and failed ones (which may run
again, or be split) move with their operation, ``worker_partition`` with them.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..queries import query
from ..state.scopes import CELL_LOCAL_TABLES, ORGANIZATION_TABLES
from ..walk.timeouts import set_lock_timeout

#: candidates read per statement (each moved in its own transaction)
MOVE_GROUP = 50


def move_idle_operations(conn: psycopg.Connection[Any], current: int, lock_seconds: float) -> int:
    """Move every idle unfinished operation of an older partition into ``current``, with its
    unfinished jobs; how many moved."""
    moved = 0
    for operations, jobs in (ORGANIZATION_TABLES, CELL_LOCAL_TABLES):
        while True:
            count, more = _move_group(conn, operations, jobs, current, lock_seconds)
            moved += count
            if not more:
                break
    return moved


def _move_group(
    conn: psycopg.Connection[Any], operations: Any, jobs: Any, current: int, lock_seconds: float
) -> tuple[int, bool]:
    """Up to ``MOVE_GROUP`` candidates, each moved in its own transaction (re-checked and
    locked there); how many moved, and whether more may be left."""
    params = {"current": current, "limit": MOVE_GROUP}
    candidates = conn.execute(
        query("partitions_movable_operations", operations=operations, jobs=jobs), params
    ).fetchall()
    moved = 0
    for _partition, operation_id in candidates:
        moved += _move_one(conn, operations, jobs, current, operation_id, lock_seconds)
    return moved, len(candidates) == MOVE_GROUP and moved > 0


def _move_one(
    conn: psycopg.Connection[Any],
    operations: Any,
    jobs: Any,
    current: int,
    operation_id: Any,
    lock_seconds: float,
) -> int:
    """One operation moved, if it is still idle now that its row is locked: 1, else 0."""
    with conn.transaction():
        set_lock_timeout(conn, lock_seconds)
        row = conn.execute(
            query("partitions_lock_movable_operation", operations=operations, jobs=jobs),
            {"current": current, "id": operation_id},
        ).fetchone()
        if row is None:  # taken by a stage since, or moved by another manager
            return 0
        where = {"current": current, "id": operation_id, "partition": row[0]}
        conn.execute(query("partitions_move_jobs", jobs=jobs), where)
        conn.execute(query("partitions_move_operation", operations=operations), where)
    return 1
