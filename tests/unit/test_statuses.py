"""The status enums mirror the SQL: the CHECK ranges, the header comment, the documented names."""

from __future__ import annotations

import re

import pytest

from dramatiq_bbo.contrib.models import JobStatus, OperationStatus
from dramatiq_bbo.migrations import schema_directory

SCHEMA = schema_directory() / "0001_operations.sql"

DOCUMENTED_OPERATION = {
    "queued": 0,
    "active": 1,
    "paused": 2,
    "finished": 3,
    "failed": 4,
    "cancelled": 5,
}
DOCUMENTED_JOB = {"pending": 0, "running": 1, "failed": 2, "succeeded": 3}

OPERATION_TABLES = ("bowcl", "bow")
JOB_TABLES = ("bojcl", "boj")


@pytest.fixture(scope="module")
def schema_sql() -> str:
    return SCHEMA.read_text()


def _status_range(schema_sql: str, prefix: str) -> range:
    match = re.search(
        rf"CONSTRAINT {prefix}_status_range CHECK \(status BETWEEN (\d+) AND (\d+)\)", schema_sql
    )
    assert match, f"no {prefix}_status_range constraint in {SCHEMA.name}"
    return range(int(match[1]), int(match[2]) + 1)


def _header_statuses(schema_sql: str, kind: str) -> dict[str, int]:
    match = re.search(rf"^--\s+{kind}:\s+(.+)$", schema_sql, re.MULTILINE)
    assert match, f"no '{kind}:' status line in the header of {SCHEMA.name}"
    pairs = (item.strip().split(" ", 1) for item in match[1].split(","))
    return {name: int(value) for value, name in pairs}


def test_operation_status_names_and_values_are_the_documented_ones() -> None:
    assert {s.name.lower(): s.value for s in OperationStatus} == DOCUMENTED_OPERATION


def test_job_status_names_and_values_are_the_documented_ones() -> None:
    assert {s.name.lower(): s.value for s in JobStatus} == DOCUMENTED_JOB


@pytest.mark.parametrize("prefix", OPERATION_TABLES)
def test_operation_status_check_allows_exactly_the_enum_values(
    schema_sql: str, prefix: str
) -> None:
    assert list(_status_range(schema_sql, prefix)) == [s.value for s in OperationStatus]


@pytest.mark.parametrize("prefix", JOB_TABLES)
def test_job_status_check_allows_exactly_the_enum_values(schema_sql: str, prefix: str) -> None:
    assert list(_status_range(schema_sql, prefix)) == [s.value for s in JobStatus]


def test_schema_header_documents_the_same_statuses(schema_sql: str) -> None:
    assert _header_statuses(schema_sql, "operation") == DOCUMENTED_OPERATION
    assert _header_statuses(schema_sql, "job") == DOCUMENTED_JOB


def test_unfinished_is_queued_active_paused() -> None:
    assert OperationStatus.UNFINISHED == {
        OperationStatus.QUEUED,
        OperationStatus.ACTIVE,
        OperationStatus.PAUSED,
    }
    assert "UNFINISHED" not in OperationStatus.__members__


@pytest.mark.parametrize(
    "index", ["bowcl_unfinished_configuration", "bow_unfinished_configuration"]
)
def test_unique_index_guards_exactly_the_unfinished_statuses(schema_sql: str, index: str) -> None:
    match = re.search(
        rf"INDEX IF NOT EXISTS {index}\b.*?WHERE status IN \(([\d, ]+)\);", schema_sql, re.S
    )
    assert match, f"no partial index {index} in {SCHEMA.name}"
    assert {int(v) for v in match[1].split(",")} == OperationStatus.UNFINISHED
