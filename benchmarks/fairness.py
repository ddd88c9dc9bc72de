"""Many small operations: 1,000 organization + 100 cell-local operations of 4 small jobs each,
on one worker process × 4 threads at the default settings (capacity, scheduler pass).

The goals: all finish within 3× the time their jobs need back to back; Jain index over the
first 500 jobs ≥ 0.9; no operation waits longer than a configured bound.

The 100 cell-local operations are enqueued first (a cron firing), then the organization ones
(users arriving), each ``enqueue`` starting its operation as a web process's does (the first
``max_running_jobs`` get their first job at once, the others wait in the pool), all before the
worker starts: every operation is then waiting, so the figures measure the dispatch order, not
the rate at which this process enqueues (a worker running meanwhile rightly runs the early
operations to completion while nothing else waits). Each operation walks 100 rows in 4 jobs of
one 25-row sub-batch (:class:`benchmarks.operations.Small`, interval 0, pause 0). The run
stops when all finished or at a cap, whichever comes first. The clock starts when the first
job starts (the worker's boot is not the scheduler's doing).

- **time to finish all**: the first job's ``started_at`` to the last ``finished_at``; its baseline
  is the jobs back to back (the sum of every job's duration): the ratio is the goal's.
- **Jain index** of the jobs each operation got among the first K jobs to finish (K = 500, or
  the jobs there are when fewer), over all operations, divided by the best value K jobs
  allow (K ÷ n when K < n operations: one job each): 1 is a round robin, 4 ÷ n·(K/n) when
  operations are served one after the other to completion.
- **longest wait**: the longest time an operation was ready (created, or its previous job
  ended; interval 0, and not before the first job started) without a job started; an
  operation still waiting at the end counts until then. Its goal is the ``max_wait_seconds``
  setting (60 s where this version has none).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from benchmarks.common import Context, Row, Workers, bench_database, jain_index, progress
from benchmarks.operations import Small
from dramatiq_bbo.db import REGISTRY

SECTION = "many small operations"
ROWS, JOB_ROWS = 100, 25
TABLES = {
    "organization": ("bbo.background_operation_workers", "bbo.background_operation_jobs"),
    "cell_local": (
        "bbo.background_operation_workers_cell_local",
        "bbo.background_operation_jobs_cell_local",
    ),
}


def enqueue_all(organization: int, cell_local: int) -> None:
    sizes: dict[str, Any] = dict.fromkeys(
        ("batch_size", "sub_batch_size", "min_batch_size", "max_batch_size"), JOB_ROWS
    )
    sizes.update(pause_ms=0, interval_seconds=0)
    for n in range(cell_local):
        bbo.enqueue(Small, "small_rows", "id", arguments={"n": n}, **sizes)
    for n in range(organization):
        bbo.enqueue(
            Small, "small_rows", "id", organization_id=n + 1, user_id=n + 1, arguments={"n": n},
            **sizes,
        )  # fmt: skip


def snapshot(dsn: str) -> tuple[dict[str, tuple[Any, Any, int]], list[tuple[str, Any, Any]], Any]:
    """Operations (created, finished, status), finished jobs (operation, started, finished)
    and the database's now."""
    operations, jobs = {}, []
    with psycopg.connect(dsn) as conn:
        for ops, job_table in TABLES.values():
            for id_, created, finished, status in conn.execute(
                f"SELECT id, created_at, finished_at, status FROM {ops}"
            ):
                operations[str(id_)] = (created, finished, status)
            jobs += [
                (str(w), s, f)
                for w, s, f in conn.execute(
                    f"SELECT worker_id, started_at, finished_at FROM {job_table}"
                    " WHERE finished_at IS NOT NULL AND started_at IS NOT NULL"
                )
            ]
        now = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    return operations, jobs, now


def longest_wait(operations: dict[str, Any], jobs: list[tuple[str, Any, Any]], now: Any) -> float:
    by_operation = defaultdict(list)
    for worker, started, finished in jobs:
        by_operation[worker].append((started, finished))
    first = min((started for _w, started, _f in jobs), default=now)
    longest = 0.0
    for id_, (created, finished, _status) in operations.items():
        ready = max(created, first)
        for started, ended in sorted(by_operation[id_]):
            longest = max(longest, (started - ready).total_seconds())
            ready = ended
        if finished is None:
            longest = max(longest, (now - ready).total_seconds())
    return longest


def fairness(operations: dict[str, Any], jobs: list[tuple[str, Any, Any]], first: int) -> float:
    ordered = sorted(jobs, key=lambda j: j[2])[:first]
    counts = Counter(worker for worker, _s, _f in ordered)
    values = [counts.get(id_, 0) for id_ in operations]
    best = min(1.0, len(ordered) / len(values)) if values else 1.0
    return jain_index(values) / best


def section(ctx: Context) -> list[Row]:
    organization, cell_local = ctx.pick((100, 10), (1_000, 100))
    cap, first = ctx.pick(30.0, 300.0), ctx.pick(100, 500)
    total = organization + cell_local
    with bench_database(ctx, "bbo_bench_small") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE small_rows (id bigint PRIMARY KEY)")
            conn.execute("INSERT INTO small_rows SELECT generate_series(1, %s)", [ROWS])
            conn.execute("VACUUM ANALYZE small_rows")
        enqueue_all(organization, cell_local)
        with Workers(dsn, threads=ctx.threads):
            started = time.monotonic()
            while time.monotonic() - started < cap:
                operations, jobs, now = snapshot(dsn)
                if all(f is not None for _c, f, _s in operations.values()):
                    break
                time.sleep(0.5)
            operations, jobs, now = snapshot(dsn)
        bound = float(getattr(REGISTRY.settings, "max_wait_seconds", 60.0))
    done = [f for _c, f, _s in operations.values() if f is not None]
    start = min((s for _w, s, _f in jobs), default=now)
    back_to_back = sum((f - s).total_seconds() for _w, s, f in jobs)
    label = f"{organization:,} organization + {cell_local:,} cell-local operations × 4 jobs"
    progress(f"  small operations: {len(done)} of {total} finished")
    if len(done) == total:
        elapsed = (max(done) - start).total_seconds()
        finish = Row(SECTION, f"{label}: time to finish all", elapsed, "s",
                     round(back_to_back, 2), "their jobs back to back",
                     elapsed / back_to_back, "≤ 3")  # fmt: skip
    else:
        elapsed = (now - start).total_seconds()
        finish = Row(SECTION, f"{label}: finished within {elapsed:.0f} s (cap)",
                     f"{len(done)} of {total}", "", round(back_to_back, 2),
                     "finished jobs back to back, s", None, "all, ≤ 3 × back to back")  # fmt: skip
    return [
        finish,
        Row(SECTION, f"Jain index over the first {min(first, len(jobs))} jobs (÷ best possible)",
            fairness(operations, jobs, first), "", goal="≥ 0.9"),
        Row(SECTION, "longest wait of an operation ready to run",
            longest_wait(operations, jobs, now), "s", bound, "max_wait_seconds",
            goal=f"≤ {bound:g} s"),
    ]  # fmt: skip
