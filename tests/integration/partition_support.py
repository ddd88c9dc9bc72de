"""Shared pieces of the partition tests: reading where rows are, copying operation rows in
bulk (the rows many short enqueued-and-finished operations leave), and the manager's state."""

from __future__ import annotations

from typing import Any

import psycopg

from dramatiq_bbo.partitions.tables import PARENTS

#: (operations table, jobs table, key columns an organization row has) of each scope
SCOPES = (
    ("bbo.background_operation_workers", "bbo.background_operation_jobs", ("organization_id",)),
    ("bbo.background_operation_workers_cell_local", "bbo.background_operation_jobs_cell_local", ()),
)
#: columns a copy of an operation row leaves to the table (keys, generated, timestamps)
NOT_COPIED = {
    "id",
    "partition",
    "arguments_digest",
    "next_run_at",
    "status",
    "job_arguments",
    "next_cursor",
    "finished_at",
    "created_at",
    "updated_at",
    "lease_owner",
    "lease_expires_at",
}


def live_partitions(conn: psycopg.Connection[Any]) -> list[int]:
    """The partitions attached to every one of the four tables (what really exists)."""
    sets = []
    for parent in PARENTS:
        rows = conn.execute(
            "SELECT substring(c.relname FROM '_([0-9]+)$')::int FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [parent.qualified],
        ).fetchall()
        sets.append({r[0] for r in rows})
    assert all(s == sets[0] for s in sets), f"the four tables disagree: {sets}"
    return sorted(sets[0])


def leftover_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Partition tables of ours that exist but are attached to nothing (detached, not dropped)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'bbo' AND c.relkind = 'r'"
        " AND c.relname ~ '^background_operation_.*_[0-9]+$'"
        " AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid)"
    ).fetchall()
    return sorted(r[0] for r in rows)


def hold_stage(conn: psycopg.Connection[Any], table: str, operation_id: Any, hold: str) -> None:
    """Give operation ``operation_id`` a live stage lease lasting ``hold`` (an interval's
    text), as a stage message or ``run_to_completion`` holds it: it is not idle meanwhile."""
    conn.execute(
        f"UPDATE {table} SET lease_owner = 'stage', lease_expires_at = bbo.now() + %s::interval"
        " WHERE id = %s",
        [hold, operation_id],
    )


def partition_of(conn: psycopg.Connection[Any], table: str, operation_id: Any) -> int | None:
    row = conn.execute(f"SELECT partition FROM {table} WHERE id = %s", [operation_id]).fetchone()
    return None if row is None else int(row[0])


def copy_operations(
    conn: psycopg.Connection[Any],
    template_id: Any,
    count: int,
    *,
    organization: bool,
    status: int,
    tag: str,
) -> list[Any]:
    """``count`` copies of operation ``template_id`` in the current partition, created now
    (``bbo.now()``), with ``status`` and arguments ``{"copy": tag-n}`` (so unfinished copies
    never share a configuration), each with one job: succeeded for a finished copy, pending
    with a checkpoint for an unfinished one; the copies' ids. Finished copies stand for the
    rows many enqueued operations leave once done; unfinished ones carry a resume cursor
    (``[n]``) and a job checkpoint (``[n, 1]``) that must survive every move."""
    operations, jobs, keys = SCOPES[0 if organization else 1]
    columns = [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'bbo' AND table_name = %s ORDER BY ordinal_position",
            [operations.split(".")[1]],
        ).fetchall()
        if r[0] not in NOT_COPIED
    ]
    listed = ", ".join(columns)
    finished = "bbo.now()" if status in (3, 4, 5) else "NULL"
    ids = conn.execute(
        f"INSERT INTO {operations} (partition, status, job_arguments, next_cursor, finished_at,"
        f" {listed})"
        f" SELECT (SELECT max(number) FROM bbo.partitions WHERE dropped_at IS NULL), %s,"
        f" jsonb_build_object('copy', %s || '-' || g), jsonb_build_array(g), {finished}, {listed}"
        f" FROM {operations}, generate_series(1, %s) AS g WHERE id = %s RETURNING id",
        [status, tag, count, template_id],
    ).fetchall()
    key_columns = "".join(f", {k}" for k in keys)
    job_status = 3 if status in (3, 4, 5) else 0
    conn.execute(
        f"INSERT INTO {jobs} (partition, worker_id, worker_partition, status, batch_size,"
        f" sub_batch_size, min_cursor, max_cursor, checkpoint_cursor{key_columns})"
        f" SELECT o.partition, o.id, o.partition, %s, o.batch_size, o.sub_batch_size,"
        f" o.next_cursor, o.next_cursor, o.next_cursor || '[1]'::jsonb{key_columns}"
        f" FROM {operations} o WHERE o.id = ANY(%s)",
        [job_status, [r[0] for r in ids]],
    )
    return [r[0] for r in ids]


def count_rows(conn: psycopg.Connection[Any], table: str, condition: str = "TRUE") -> int:
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE {condition}").fetchone()
    assert row is not None
    return int(row[0])
