"""Large jobs of an integer cursor: their last row estimated from the density of the keys
walked before (one probe, not an index walk of the job's rows), the ranges still tiling the
operation's range, and the exact walk where an estimate cannot serve."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.jobs.instance import build_operation
from dramatiq_bbo.jobs.range_probe import ESTIMATE_FROM, RangeProbe, density

from .pipeline_support import drive
from .pipeline_support import no_broker as no_broker  # a fixture
from .test_job_chaining import Visit

SIZE = ESTIMATE_FROM


def make_items(conn: psycopg.Connection[Any], keys: str, column: str = "id bigint") -> None:
    name = column.split()[0]
    conn.execute(f"CREATE TABLE items ({column} PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute(f"INSERT INTO items ({name}) {keys}")


def probe_at(operation: Any, cursor: Any, size: int, dense: float | None) -> Any:
    at = dataclasses.replace(operation, next_cursor=cursor)
    _, keyset = build_operation(at)
    with REGISTRY.connection() as conn:
        probe = RangeProbe(conn, keyset, at, size, dense)
        return probe.estimate, probe.bounds()


def test_the_density_of_a_range_is_its_rows_per_key_value() -> None:
    assert density([2], [200], 100) == 0.5  # every second key
    assert density([1], [100], 100) == 1.0
    assert density([1], [1], 1) is None  # one row: no step to measure
    assert density(None, [100], 50) is None
    assert density([1, 2], [3, 4], 5) is None  # a composite cursor spans no number of keys
    assert density(["a"], ["z"], 5) is None
    assert density([1], [100], 0) is None


def test_a_large_job_of_an_integer_cursor_ends_where_its_density_says(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    make_items(conn, "SELECT g * 2 FROM generate_series(1, 100000) AS g")  # keys 2, 4, ...
    operation = bbo.enqueue(Visit, "items", "id", batch_size=SIZE, pause_ms=0).operation

    estimate, bounds = probe_at(operation, [1000], SIZE, 0.5)
    assert estimate == 1000 + 2 * SIZE
    assert bounds == ([1002], [1000 + 2 * SIZE])  # exactly SIZE rows: the density was right

    estimate, bounds = probe_at(operation, [1000], SIZE, 1.0)  # denser than it is: fewer rows
    assert bounds == ([1002], [1000 + SIZE])
    estimate, bounds = probe_at(operation, [199_000], SIZE, 0.5)  # past the end: capped
    assert estimate == 200_000 and bounds == ([199_002], [200_000])

    assert probe_at(operation, [1000], SIZE - 1, 0.5)[0] is None  # small: walked exactly
    assert probe_at(operation, [1000], SIZE, None)[0] is None  # nothing known: walked


def test_a_gap_below_the_estimate_falls_back_to_the_exact_walk(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    make_items(conn, "SELECT g FROM generate_series(1, 1000) AS g UNION ALL"
               " SELECT g FROM generate_series(1000000, 1100000) AS g")  # fmt: skip
    operation = bbo.enqueue(Visit, "items", "id", batch_size=SIZE, pause_ms=0).operation
    estimate, bounds = probe_at(operation, [1000], SIZE, 1.0)
    assert estimate == 1000 + SIZE  # no key in (1000, 21000]
    assert bounds == ([1_000_000], [1_000_000 + SIZE - 1])  # the walk: SIZE rows


def test_a_text_cursor_is_always_walked(configured: str, conn: psycopg.Connection[Any]) -> None:
    make_items(conn, "SELECT lpad(g::text, 8, '0') FROM generate_series(1, 30000) AS g", "k text")
    operation = bbo.enqueue(Visit, "items", "k", batch_size=SIZE, pause_ms=0).operation
    estimate, bounds = probe_at(operation, None, SIZE, 1.0)
    assert estimate is None
    assert bounds == (["00000001"], [f"{SIZE:08d}"])


def test_estimated_jobs_visit_every_row_once(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    """Keys dense, then sparse, then dense again: the estimates err both ways, and every row
    is still visited exactly once."""
    make_items(conn, "SELECT g FROM generate_series(1, 30000) AS g UNION ALL"
               " SELECT g * 7 FROM generate_series(5000, 20000) AS g UNION ALL"
               " SELECT g FROM generate_series(200000, 260000) AS g")  # fmt: skip
    total = conn.execute("SELECT count(*) FROM items").fetchone()[0]  # type: ignore[index]
    operation = bbo.enqueue(
        Visit, "items", "id", batch_size=SIZE, sub_batch_size=5000, pause_ms=0,
        interval_seconds=0, min_batch_size=SIZE, max_batch_size=SIZE,
    ).operation  # fmt: skip
    final = bbo.run_to_completion(operation.id)
    assert final.status == bbo.OperationStatus.FINISHED
    visits = conn.execute("SELECT visits, count(*) FROM items GROUP BY visits").fetchall()
    assert visits == [(1, total)]
    jobs = bbo.list_jobs(operation.id)
    ranges = sorted((job.min_cursor[0], job.max_cursor[0]) for job in jobs)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # no overlap
    assert len(jobs) >= 5  # sized, not one job for the whole range
    second = sorted(jobs, key=lambda job: job.min_cursor[0])[1]
    assert second.max_cursor == [39998]  # estimated from the first job's density (1 a key)
    assert second.processed_tuple_count < SIZE  # the sparse stretch after it: fewer rows


@pytest.fixture(autouse=True)
def _forget_models() -> Any:
    yield
    from dramatiq_bbo.walk import tables

    tables.forget()


@pytest.mark.usefixtures("no_broker")
def test_the_pipeline_estimates_from_the_operations_walked_range_and_visits_every_row_once(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    """Through the orchestrator (job creation after the end of the job before, the density
    read from the operation's counters): the same exactly-once walk."""
    make_items(conn, "SELECT g * 2 FROM generate_series(1, 70000) AS g")
    total = 70000
    operation = bbo.enqueue(
        Visit, "items", "id", batch_size=SIZE, sub_batch_size=5000, pause_ms=0,
        interval_seconds=0, min_batch_size=SIZE, max_batch_size=SIZE,
    ).operation  # fmt: skip
    final, outcomes = drive(operation.id)
    assert final.status == bbo.OperationStatus.FINISHED
    assert conn.execute("SELECT visits, count(*) FROM items GROUP BY visits").fetchall() == [
        (1, total)
    ]
    jobs = sorted(bbo.list_jobs(operation.id), key=lambda job: job.min_cursor[0])
    assert [job.processed_tuple_count for job in jobs] == [SIZE, SIZE, SIZE, total - 3 * SIZE]
