"""The schema refuses bad state by itself: CHECKs, NOT NULLs, the duplicate guard, partitions.

Raw SQL only, so these tests hold for any writer (our code, a DBA in psql, another service).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

WORKERS_CL = "background_operation_workers_cell_local"
WORKERS_ORG = "background_operation_workers"
JOBS_CL = "background_operation_jobs_cell_local"
JOBS_ORG = "background_operation_jobs"

PREFIX = {WORKERS_CL: "bowcl", WORKERS_ORG: "bow", JOBS_CL: "bojcl", JOBS_ORG: "boj"}
OPERATION_TABLES = (WORKERS_CL, WORKERS_ORG)
JOB_TABLES = (JOBS_CL, JOBS_ORG)
ALL_TABLES = OPERATION_TABLES + JOB_TABLES

_OPERATION = {
    "job_class_name": "BackfillThings",
    "table_schema": "public",
    "table_name": "things",
    "column_name": "id",
    "cursor_columns": ["id"],
    "batch_size": 100,
    "sub_batch_size": 10,
    "min_cursor": Jsonb([0]),
}
_JOB = {
    "worker_partition": 1,
    "batch_size": 100,
    "sub_batch_size": 10,
    "min_cursor": Jsonb([0]),
    "max_cursor": Jsonb([100]),
}
VALID: dict[str, dict[str, Any]] = {
    WORKERS_CL: _OPERATION,
    WORKERS_ORG: {**_OPERATION, "organization_id": 7, "user_id": 11},
    JOBS_CL: {**_JOB, "worker_id": 1},
    JOBS_ORG: {**_JOB, "organization_id": 7, "worker_id": uuid.uuid4()},
}


def insert(conn: psycopg.Connection[Any], table: str, **overrides: Any) -> tuple[Any, str]:
    """Insert a valid row of ``table`` changed by ``overrides``; return (id, partition table)."""
    row = {**VALID[table], **overrides}
    query = sql.SQL("INSERT INTO bbo.{} ({}) VALUES ({}) RETURNING id, tableoid::regclass::text")
    query = query.format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    found = conn.execute(query, list(row.values())).fetchone()
    assert found is not None
    return found[0], found[1]


# (constraint suffix, overrides) rejected by every operation table.
OPERATION_BAD_ROWS = [
    ("status_range", {"status": 6}),
    ("status_range", {"status": -1}),
    ("job_class_name_length", {"job_class_name": ""}),
    ("job_class_name_length", {"job_class_name": "J" * 256}),
    ("table_name_length", {"table_name": ""}),
    ("table_name_length", {"table_name": "t" * 128}),
    ("table_schema_length", {"table_schema": ""}),
    ("table_schema_length", {"table_schema": "é" * 32}),  # 64 bytes
    ("column_name_length", {"column_name": ""}),
    ("column_name_length", {"column_name": "c" * 64}),
    ("database_name_length", {"database_name": ""}),
    ("database_name_length", {"database_name": "d" * 64}),
    ("cursor_columns_present", {"cursor_columns": []}),
    ("cursor_columns_present", {"cursor_columns": ["c"] * 9}),
    ("arguments_shape", {"job_arguments": Jsonb("a string")}),
    ("arguments_shape", {"job_arguments": Jsonb(42)}),
    ("arguments_shape", {"job_arguments": Jsonb(None)}),
    ("sizes", {"sub_batch_size": 0}),
    ("sizes", {"sub_batch_size": -5, "batch_size": 10}),
    ("sizes", {"batch_size": 9, "sub_batch_size": 10}),
    ("size_bounds", {"min_batch_size": 0}),
    ("size_bounds", {"min_batch_size": 3000, "max_batch_size": 2000}),
    ("pause_ms", {"pause_ms": -1}),
    ("interval", {"interval_seconds": -0.5}),
    ("min_cursor_array", {"min_cursor": Jsonb({"id": 0})}),
    ("min_cursor_array", {"min_cursor": Jsonb(0)}),
    ("min_cursor_array", {"min_cursor": Jsonb("0")}),
    ("max_cursor_array", {"max_cursor": Jsonb({"id": 9})}),
    ("next_cursor_array", {"next_cursor": Jsonb("5")}),
    ("counts", {"processed_tuple_count": -1}),
    ("counts", {"affected_tuple_count": -1}),
    ("counts", {"total_tuple_count": -1}),
    ("hold_reason_length", {"hold_reason": "h" * 1001}),
]

JOB_BAD_ROWS = [
    ("status_range", {"status": 4}),
    ("status_range", {"status": -1}),
    ("attempts", {"attempts": -1}),
    ("sizes", {"sub_batch_size": 0}),
    ("sizes", {"batch_size": 9, "sub_batch_size": 10}),
    ("pause_ms", {"pause_ms": -1}),
    ("min_cursor_array", {"min_cursor": Jsonb({"id": 0})}),
    ("max_cursor_array", {"max_cursor": Jsonb(100)}),
    ("checkpoint_array", {"checkpoint_cursor": Jsonb({"id": 50})}),
    ("metrics_object", {"metrics": Jsonb([])}),
    ("metrics_object", {"metrics": Jsonb("fast")}),
    ("counts", {"processed_tuple_count": -1}),
    ("counts", {"affected_tuple_count": -1}),
    ("exception_class_length", {"exception_class": "E" * 256}),
]


def _cases(tables: tuple[str, ...], bad_rows: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    return [
        pytest.param(table, suffix, overrides, id=f"{PREFIX[table]}_{suffix}-{i}")
        for table in tables
        for i, (suffix, overrides) in enumerate(bad_rows)
    ]


@pytest.mark.parametrize("table", ALL_TABLES)
def test_the_reference_row_is_accepted(conn: psycopg.Connection[Any], table: str) -> None:
    insert(conn, table)


@pytest.mark.parametrize(
    ("table", "suffix", "overrides"),
    _cases(OPERATION_TABLES, OPERATION_BAD_ROWS) + _cases(JOB_TABLES, JOB_BAD_ROWS),
)
def test_check_constraint_rejects_bad_row(
    conn: psycopg.Connection[Any], table: str, suffix: str, overrides: dict[str, Any]
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        insert(conn, table, **overrides)
    assert caught.value.diag.constraint_name == f"{PREFIX[table]}_{suffix}"


OPERATION_EDGE_ROWS = [
    {"status": 5},
    {"column_name": "c" * 63, "table_name": "t" * 127, "database_name": "d" * 63},
    {"job_class_name": "J" * 255, "cursor_columns": ["c"] * 8},
    {"batch_size": 10, "sub_batch_size": 10, "pause_ms": 0, "interval_seconds": 0},
    {"min_batch_size": 5, "max_batch_size": 5},
    {"job_arguments": Jsonb([1, "two"]), "max_cursor": Jsonb([]), "next_cursor": None},
    {"hold_reason": "h" * 1000, "total_tuple_count": 0},
]
JOB_EDGE_ROWS = [
    {"status": 3, "attempts": 0},
    {"batch_size": 10, "sub_batch_size": 10, "pause_ms": 0},
    {"checkpoint_cursor": Jsonb([5]), "metrics": Jsonb({"sub_batches": [{"ms": 3}]})},
    {"exception_class": "E" * 255, "exception_message": "m" * 10_000},
]


@pytest.mark.parametrize(
    ("table", "overrides"),
    [(t, row) for t in OPERATION_TABLES for row in OPERATION_EDGE_ROWS]
    + [(t, row) for t in JOB_TABLES for row in JOB_EDGE_ROWS],
)
def test_rows_on_the_boundary_are_accepted(
    conn: psycopg.Connection[Any], table: str, overrides: dict[str, Any]
) -> None:
    insert(conn, table, **overrides)


@pytest.mark.parametrize(
    ("table", "column"),
    [
        (WORKERS_ORG, "organization_id"),
        (WORKERS_ORG, "user_id"),
        (JOBS_ORG, "organization_id"),
    ],
)
def test_organization_tables_require_organization_columns(
    conn: psycopg.Connection[Any], table: str, column: str
) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation) as caught:
        insert(conn, table, **{column: None})
    assert caught.value.diag.column_name == column


# -- the duplicate guard (partial unique index on unfinished configurations) ------------------
INDEX = {WORKERS_CL: "bowcl_unfinished_configuration", WORKERS_ORG: "bow_unfinished_configuration"}


def _parent_index(conn: psycopg.Connection[Any], violated: str | None) -> str | None:
    """The error names the partition's own index (a generated name); find the declared one."""
    found = conn.execute(
        "SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = %s::regclass",
        [f"bbo.{violated}"],
    ).fetchone()
    return found[0] if found else None


@pytest.mark.parametrize("table", OPERATION_TABLES)
@pytest.mark.parametrize("first_status", [0, 1, 2], ids=["queued", "active", "paused"])
def test_second_unfinished_operation_with_same_configuration_is_rejected(
    conn: psycopg.Connection[Any], table: str, first_status: int
) -> None:
    arguments = Jsonb({"since": "2024-01-01"})
    insert(conn, table, status=first_status, job_arguments=arguments)
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        insert(conn, table, job_arguments=arguments)
    assert _parent_index(conn, caught.value.diag.constraint_name) == f"bbo.{INDEX[table]}"


@pytest.mark.parametrize("table", OPERATION_TABLES)
@pytest.mark.parametrize("first_status", [3, 4, 5], ids=["finished", "failed", "cancelled"])
def test_same_configuration_is_accepted_once_the_first_is_over(
    conn: psycopg.Connection[Any], table: str, first_status: int
) -> None:
    insert(conn, table, status=first_status)
    insert(conn, table)


@pytest.mark.parametrize("table", OPERATION_TABLES)
@pytest.mark.parametrize(
    "difference",
    [
        {"job_arguments": Jsonb({"since": "2025-01-01"})},
        {"job_class_name": "OtherBackfill"},
        {"table_name": "other_things"},
        {"table_schema": "archive"},
        {"column_name": "other_id"},
        {"database_name": "ci"},
    ],
    ids=["arguments", "class", "table", "schema", "column", "database"],
)
def test_a_different_configuration_is_accepted(
    conn: psycopg.Connection[Any], table: str, difference: dict[str, Any]
) -> None:
    insert(conn, table, job_arguments=Jsonb({"since": "2024-01-01"}))
    insert(conn, table, **{"job_arguments": Jsonb({"since": "2024-01-01"}), **difference})


def test_same_configuration_is_accepted_for_another_organization(
    conn: psycopg.Connection[Any],
) -> None:
    insert(conn, WORKERS_ORG, organization_id=1)
    insert(conn, WORKERS_ORG, organization_id=2)
    with pytest.raises(psycopg.errors.UniqueViolation):
        insert(conn, WORKERS_ORG, organization_id=2)


@pytest.mark.parametrize("table", OPERATION_TABLES)
def test_arguments_differing_only_in_key_order_and_spacing_are_the_same(
    conn: psycopg.Connection[Any], table: str
) -> None:
    # Sent as text (psycopg's "unknown" type), so Postgres parses exactly these spellings.
    first = '{"a": 1, "b": [1, 2], "c": {"x": "y", "w": null}}'
    second = '{ "c":{"w":null,"x":"y"},"b":[1,2], "a" :1 }'
    insert(conn, table, job_arguments=first, status=3)
    digests = conn.execute(
        sql.SQL("SELECT md5(%s::jsonb::text) = md5(%s::jsonb::text)"), [first, second]
    ).fetchone()
    assert digests == (True,)
    insert(conn, table, job_arguments=Jsonb({"a": 1, "b": [1, 2], "c": {"x": "y", "w": None}}))
    with pytest.raises(psycopg.errors.UniqueViolation):
        insert(conn, table, job_arguments=second)


@pytest.mark.parametrize("table", OPERATION_TABLES)
def test_the_unique_index_does_not_span_partitions(
    conn: psycopg.Connection[Any], table: str
) -> None:
    """Why enqueue also takes an advisory lock: another partition is not covered."""
    _create_partition(conn, table, 2)
    insert(conn, table, partition=1)
    insert(conn, table, partition=2)


# -- partition routing --------------------------------------------------------------------------
def _create_partition(conn: psycopg.Connection[Any], table: str, value: int) -> None:
    conn.execute(
        sql.SQL("CREATE TABLE bbo.{} PARTITION OF bbo.{} FOR VALUES IN ({})").format(
            sql.Identifier(f"{table}_{value}"), sql.Identifier(table), sql.Literal(value)
        )
    )


@pytest.mark.parametrize("table", ALL_TABLES)
def test_rows_route_to_the_partition_named_by_their_partition_column(
    conn: psycopg.Connection[Any], table: str
) -> None:
    _, first = insert(conn, table, partition=1)
    assert first == f"bbo.{table}_1"

    with pytest.raises(psycopg.errors.CheckViolation, match="no partition of relation"):
        insert(conn, table, partition=2)

    _create_partition(conn, table, 2)
    _, second = insert(conn, table, partition=2)
    assert second == f"bbo.{table}_2"


@pytest.mark.parametrize("table", ALL_TABLES)
def test_updating_partition_moves_the_row(conn: psycopg.Connection[Any], table: str) -> None:
    _create_partition(conn, table, 2)
    row_id, _ = insert(conn, table, partition=1)
    conn.execute(
        sql.SQL("UPDATE bbo.{} SET partition = 2 WHERE partition = 1 AND id = %s").format(
            sql.Identifier(table)
        ),
        [row_id],
    )
    located = conn.execute(
        sql.SQL("SELECT tableoid::regclass::text, partition FROM bbo.{} WHERE id = %s").format(
            sql.Identifier(table)
        ),
        [row_id],
    ).fetchall()
    assert located == [(f"bbo.{table}_2", 2)]
    left = conn.execute(sql.SQL("SELECT count(*) FROM bbo.{}").format(sql.Identifier(f"{table}_1")))
    assert left.fetchone() == (0,)
