"""Copying an organization's operations and their job history into another database.

Rows travel as JSON (``to_jsonb`` at the source, ``jsonb_populate_recordset`` at the target),
written through the columns both sides have: a column the target lacks is not sent, one only
the target has takes its default, and a generated column is computed there again. Every
value is carried as it was (cursors, counters, sizes, leases of finished jobs, timestamps)
except what belongs to the target database: the partition (the target's current one), the
database's name, and the table's oid (the same table has another oid in another database).

An unfinished operation arrives **inert**: paused and held "arriving" with no end, so neither
a scheduler, a ``run_to_completion`` nor the health gates of the target act on it before the
source copy is gone; :mod:`.steps` restores its status and hold after that.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from ..enqueueing.api import current_partition
from ..errors import MoveConflict, MoveTargetNotReady
from ..queries import query
from ..state.records import OperationStatus
from ..state.scopes import ORGANIZATION

#: what an arriving operation is held with until the move resumes it
ARRIVING_HOLD = "arriving from {source} (move {move_id}): inert until the move resumes it"
#: ... and until when: no end in sight, yet a date Python can read (not ``infinity``)
HELD_UNTIL = "9999-01-01T00:00:00+00:00"

_OPERATIONS = ("bbo", "background_operation_workers")
_JOBS = ("bbo", "background_operation_jobs")
_UNFINISHED = {
    int(s) for s in (OperationStatus.QUEUED, OperationStatus.ACTIVE, OperationStatus.PAUSED)
}


def read_organization(
    conn: psycopg.Connection[Any], organization_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The organization's operation rows and their jobs' rows at the source, as JSON
    objects."""
    operations = [
        row[0]
        for row in conn.execute(
            query("cells_organization_operations"), {"organization_id": organization_id}
        )
    ]
    ids = [row["id"] for row in operations]
    jobs = [row[0] for row in conn.execute(query("cells_operations_jobs"), {"ids": ids})]
    return operations, jobs


def fingerprints(operations: list[dict[str, Any]]) -> dict[str, str]:
    """Each operation's ``updated_at`` (as its JSON spells it): any change to the row moves
    it (a trigger), so the delete can tell a copy made stale by a resume at the source."""
    return {row["id"]: row["updated_at"] for row in operations}


def restore_state(operations: list[dict[str, Any]], statuses: dict[str, int]) -> dict[str, Any]:
    """What each arriving operation resumes as: its status before the move paused it (its
    own status when the move did not pause it: a finished one), and its hold."""
    return {
        row["id"]: {
            "status": int(statuses.get(row["id"], row["status"])),
            "on_hold_until": row["on_hold_until"],
            "hold_reason": row["hold_reason"],
        }
        for row in operations
    }


def write_copy(
    conn: psycopg.Connection[Any],
    operations: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    *,
    target_name: str,
    hold_reason: str,
) -> None:
    """Insert the rows into the target, inert (inside the caller's transaction)."""
    partition = current_partition(conn, ORGANIZATION.name)
    oids = table_oids(conn, {(row["table_schema"], row["table_name"]) for row in operations})
    arrived = [_arriving(row, partition, target_name, oids, hold_reason) for row in operations]
    moved_jobs = [{**row, "partition": partition, "worker_partition": partition} for row in jobs]
    try:
        _insert(conn, _OPERATIONS, arrived)
        _insert(conn, _JOBS, moved_jobs)
    except psycopg.errors.UniqueViolation as exc:
        raise MoveConflict(
            "the target already holds one of the organization's operations, or an unfinished "
            f"operation of the same configuration ({exc.diag.constraint_name}): nothing was "
            "copied"
        ) from None


def _arriving(
    row: dict[str, Any],
    partition: int,
    target_name: str,
    oids: dict[tuple[str, str], int],
    hold_reason: str,
) -> dict[str, Any]:
    copied = {
        **row,
        "partition": partition,
        "database_name": target_name,
        "table_oid": oids[(row["table_schema"], row["table_name"])],
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if int(row["status"]) in _UNFINISHED:
        copied.update(
            status=int(OperationStatus.PAUSED), on_hold_until=HELD_UNTIL, hold_reason=hold_reason
        )
    return copied


def table_oids(
    conn: psycopg.Connection[Any], tables: set[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The target's oid of each table (schema, name); a missing table is refused."""
    found: dict[tuple[str, str], int] = {}
    for schema, name in sorted(tables):
        row = conn.execute(query("cells_table_oid"), {"schema": schema, "name": name}).fetchone()
        if row is None:
            raise MoveTargetNotReady(
                f"table {schema}.{name} does not exist in the target database: create it (and "
                "copy the organization's rows) before moving its operations"
            )
        found[(schema, name)] = int(row[0])
    return found


def _insert(
    conn: psycopg.Connection[Any], table: tuple[str, str], rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    writable = [
        r[0] for r in conn.execute(query("cells_writable_columns"), {"table": ".".join(table)})
    ]
    columns = [name for name in writable if name in rows[0]]
    statement = query(
        "cells_insert_rows",
        table=table,
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in columns),
    )
    conn.execute(statement, {"rows": json.dumps(rows)})


def discard_copy(conn: psycopg.Connection[Any], ids: list[str]) -> None:
    """Delete an inert copy made stale (inside the caller's transaction): the jobs, then
    the operations."""
    conn.execute(query("cells_delete_jobs"), {"ids": ids})
    conn.execute(query("cells_delete_operations"), {"ids": ids})
