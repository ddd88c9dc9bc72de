"""What the move tests share: an organization-scoped operation over a table holding several
organizations' rows, the application's own part of a move (copying the organization's rows
to the target), and the checks (one live copy, every row visited once).

Table::

    org_items (id bigint PRIMARY KEY, organization_id bigint, visits int NOT NULL DEFAULT 0)
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

import dramatiq_bbo as bbo

ROWS_PER_ORGANIZATION = 400
USER_ID = 1


class OrganizationVisit(bbo.BaseOperation):
    """``visits = visits + 1`` on every row of the organization its arguments name."""

    name = "faults.organization_visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def scope(self, query: Any) -> Any:
        return query.where(self.table.organization_id == self.arguments["organization"])

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


TABLE_DDL = """
CREATE TABLE IF NOT EXISTS org_items (
    id bigint PRIMARY KEY, organization_id bigint NOT NULL, visits int NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS org_items_by_organization ON org_items (organization_id, id);
"""
#: a table only the source has (for the move's refusal of a target without it)
SOURCE_ONLY_DDL = TABLE_DDL.replace("org_items", "source_only_items")


def make_items(
    conn: psycopg.Connection[Any], organizations: list[int], *, table: str = "org_items"
) -> None:
    """``table`` with ROWS_PER_ORGANIZATION rows of each organization, interleaved ids."""
    conn.execute(TABLE_DDL if table == "org_items" else SOURCE_ONLY_DDL)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, organization_id)"
            " SELECT g, (%s::bigint[])[1 + g %% cardinality(%s::bigint[])]"
            " FROM generate_series(1, %s) AS g"
        ).format(sql.Identifier(table)),
        [organizations, organizations, ROWS_PER_ORGANIZATION * len(organizations)],
    )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


def enqueue_half_done(
    organization_id: int, *, sub_batches: int = 3, table: str = "org_items"
) -> str:
    """An operation of the organization in ``main``, stopped after a few sub-batches (batch
    100, sub-batch 50: more than one job done, one left pending mid-way)."""
    operation = bbo.enqueue(
        OrganizationVisit,
        table,
        "id",
        arguments={"organization": organization_id},
        organization_id=organization_id,
        user_id=USER_ID,
        batch_size=100,
        sub_batch_size=50,
    ).operation
    seen: list[int] = []

    def stop_check() -> str | None:
        seen.append(1)
        return "half done, by the test" if len(seen) > sub_batches else None

    bbo.run_to_completion(operation.id, stop_check=stop_check)
    return str(operation.id)


def copy_rows(source_dsn: str, target_dsn: str, organization_id: int) -> None:
    """The application's part of a move: the organization's rows, as they are now, into the
    target (its table made if missing)."""
    with psycopg.connect(source_dsn) as source:
        rows = source.execute(
            "SELECT id, organization_id, visits FROM org_items WHERE organization_id = %s",
            [organization_id],
        ).fetchall()
    with psycopg.connect(target_dsn) as target, target.transaction():
        target.execute(TABLE_DDL)
        with target.cursor() as cur:
            cur.executemany(
                "INSERT INTO org_items (id, organization_id, visits) VALUES (%s, %s, %s)", rows
            )
        target.execute("ANALYZE org_items")


def visits(dsn: str, organization_id: int) -> dict[int, int]:
    """How many rows of the organization were visited how many times: {visits: rows}."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT visits, count(*) FROM org_items WHERE organization_id = %s GROUP BY 1",
            [organization_id],
        ).fetchall()
    return {int(v): int(n) for v, n in rows}


def copies(dsn: str, operation_id: str) -> tuple[int, int]:
    """The operation's rows and job rows in one database."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM bbo.background_operation_workers WHERE id = %s),"
            " (SELECT count(*) FROM bbo.background_operation_jobs WHERE worker_id = %s)",
            [operation_id, operation_id],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def live_copies(dsns: list[str], operation_id: str) -> int:
    """In how many databases the operation could run now: unfinished, not paused, not held."""
    count = 0
    for dsn in dsns:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM bbo.background_operation_workers WHERE id = %s"
                " AND status IN (0, 1) AND on_hold_until IS NULL",
                [operation_id],
            ).fetchone()
        count += int(row[0]) if row else 0
    return count
