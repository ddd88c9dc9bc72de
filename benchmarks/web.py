"""Web page: the operations list at 10,000 operations, in pages of 50.

The goal: every page of the list answered in ≤ 200 ms of server time — the first page, one
in the middle, the last, and a filtered one. One organization-scoped operation is run to its
end (10 jobs), then it and its jobs are copied up to 10,000 operations and 100,000 jobs, a
tenth of the copies marked active (so the view computes a rate over running jobs, as it does
for the operations an operator watches). Each page is asked of the application in this
process through Starlette's TestClient (routing, the two queries, the template: everything
the server does for a request), once untimed, then timed; the median is reported, against the
baseline of the first page at 1,000 operations.
"""

from __future__ import annotations

import statistics
import time

import psycopg

import dramatiq_bbo as bbo
from benchmarks.common import Context, Row, bench_database, execute, progress
from benchmarks.operations import Small
from benchmarks.scheduling import OPERATIONS, grow

SECTION = "web"
JOBS = "bbo.background_operation_jobs"
COUNT = 10_000
BASELINE_COUNT = 1_000
JOBS_PER_OPERATION = 10
GOAL_MS = 200


def copy_jobs(dsn: str) -> None:
    """Give every copied operation the first operation's jobs (untimed set-up)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        columns = [
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'bbo'"
                " AND table_name = 'background_operation_jobs' AND is_generated = 'NEVER'"
                " AND column_name NOT IN ('id', 'worker_id') ORDER BY ordinal_position"
            ).fetchall()
        ]
        listed = ", ".join(f"j.{name}" for name in columns)
        conn.execute(
            f"INSERT INTO {JOBS} ({', '.join(columns)}, worker_id)"
            f" SELECT {listed}, w.id FROM {JOBS} AS j"
            f" CROSS JOIN {OPERATIONS} AS w"
            f" WHERE j.worker_id = %(first)s AND w.id <> %(first)s"
            f" AND NOT EXISTS (SELECT 1 FROM {JOBS} AS o WHERE o.worker_id = w.id)",
            {"first": first_operation(conn)},
        )
        conn.execute(
            f"UPDATE {OPERATIONS} SET status = 1, finished_at = NULL"
            " WHERE (job_arguments ->> 'n')::int % 10 = 0"
        )
        conn.execute(f"VACUUM ANALYZE {OPERATIONS}")
        conn.execute(f"VACUUM ANALYZE {JOBS}")
        row = conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone()
        progress(f"  web: {row[0] if row else 0:,} jobs")


def first_operation(conn: psycopg.Connection) -> object:
    """The operation that ran (the copies are numbered from 0)."""
    row = conn.execute(f"SELECT id FROM {OPERATIONS} WHERE job_arguments ->> 'n' = '-1'").fetchone()
    assert row is not None
    return row[0]


def timed_pages(paths: dict[str, str], repeat: int) -> dict[str, float]:
    """Median milliseconds of each page, asked ``repeat`` times after one untimed request."""
    from starlette.testclient import TestClient

    from dramatiq_bbo.web import create_app

    client = TestClient(create_app())
    medians = {}
    for label, path in paths.items():
        seconds = []
        for index in range(repeat + 1):
            started = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, (path, response.status_code)
            if index:
                seconds.append(elapsed)
        medians[label] = statistics.median(seconds) * 1000
    return medians


def section(ctx: Context) -> list[Row]:
    repeat = ctx.pick(5, 20)
    last = COUNT // 50
    paths = {
        "first page": "/",
        "a middle page": f"/?page={last // 2}",
        "the last page": f"/?page={last}",
        "active only, page 2": "/?status=active&page=2",
    }
    with bench_database(ctx, "bbo_bench_web", broker=False) as dsn:
        execute(dsn, "CREATE TABLE web_rows (id bigint PRIMARY KEY, visits int DEFAULT 0)")
        execute(dsn, "INSERT INTO web_rows (id) SELECT generate_series(1, 1000)")
        enqueued = bbo.enqueue(
            Small, "web_rows", "id", organization_id=1, user_id=1, arguments={"n": -1},
            batch_size=1000 // JOBS_PER_OPERATION, min_batch_size=1000 // JOBS_PER_OPERATION,
            max_batch_size=1000 // JOBS_PER_OPERATION, sub_batch_size=50,
        )  # fmt: skip
        bbo.run_to_completion(enqueued.operation.id)
        grow(dsn, BASELINE_COUNT)
        copy_jobs(dsn)
        baseline = timed_pages({"first page": "/"}, repeat)["first page"]
        progress(f"  web: {BASELINE_COUNT:,} operations")
        grow(dsn, COUNT)
        copy_jobs(dsn)
        medians = timed_pages(paths, repeat)
        progress(f"  web: {COUNT:,} operations")
    rows = []
    for label, ms in medians.items():
        row = Row(SECTION, f"operations list at {COUNT:,} operations, {label}", ms, "ms")
        row.baseline, row.baseline_name = round(baseline, 2), f"first page at {BASELINE_COUNT:,}"
        row.ratio, row.goal = ms / baseline, f"≤ {GOAL_MS} ms"
        rows.append(row)
    return rows
