"""Optimizer convergence: how many jobs until a job's duration is within ±10% of the duration
the optimizer settles at (its target, 0.90 × the interval, at the average time per row plus
its 8% margin: about 0.83 × interval), on one real worker; and that no job passes 0.95 ×
interval. A job's duration is the runner's own measure of
its run (``metrics["duration_seconds"]``, what the optimizer sizes with); the longest job is
also given from its ``started_at`` to its ``finished_at`` (claim and end bookkeeping
included).

One operation visits the rows of a large table (``bench.touch_and_notify``, sub-batch 100,
pause 0) with a short interval, starting at 1,000 rows per job; after enough jobs it is
cancelled. The baseline is what the optimizer's own rule promises for this run
(``jobs_needed(start, optimum)``: growth capped per job), the optimum being the size it
settles at for the time per row measured over the run's last jobs (``steady_size``). Also
reported: the longest job ÷ the interval (no job may pass 0.95 × the interval it is sized
for).
"""

from __future__ import annotations

import statistics
import time

import psycopg

import dramatiq_bbo as bbo
from benchmarks.common import Context, Row, Workers, bench_database, progress
from benchmarks.operations import TouchAndNotify
from dramatiq_bbo.jobs.optimizer import CEILING, TARGET_EFFICIENCY, jobs_needed, steady_size
from dramatiq_bbo.state.records import JobStatus

SECTION = "optimizer"
START = 1_000


def section(ctx: Context) -> list[Row]:
    interval, wanted, rows = ctx.pick((0.25, 24, 500_000), (1.0, 32, 3_000_000))
    with bench_database(ctx, "bbo_bench_opt") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE opt_rows (id bigint PRIMARY KEY, visits int DEFAULT 0)")
            conn.execute("INSERT INTO opt_rows (id) SELECT generate_series(1, %s)", [rows])
            conn.execute("VACUUM ANALYZE opt_rows")
        with Workers(dsn, threads=ctx.threads):
            operation = bbo.enqueue(
                TouchAndNotify, "opt_rows", "id", batch_size=START, min_batch_size=START,
                sub_batch_size=100, pause_ms=0, interval_seconds=interval,
            ).operation  # fmt: skip
            deadline = time.monotonic() + wanted * (interval * 3 + 1) + 30
            while time.monotonic() < deadline:
                done = [j for j in bbo.list_jobs(operation) if j.status == JobStatus.SUCCEEDED]
                current = bbo.get_operation(operation.id)
                if len(done) >= wanted or not current.unfinished:
                    break
                time.sleep(0.2)
            if bbo.get_operation(operation.id).unfinished:
                bbo.cancel(operation.id)
    jobs = sorted(done, key=lambda j: j.started_at)  # type: ignore[arg-type, return-value]
    # the runner's own measure of a run (what the optimizer sizes with), and the job's wall span
    durations = [float(j.metrics["duration_seconds"]) for j in jobs]
    spans = [(j.finished_at - j.started_at).total_seconds() for j in jobs]  # type: ignore[operator]
    per_row = statistics.median(
        d / j.processed_tuple_count for d, j in zip(durations[-5:], jobs[-5:], strict=True)
    )
    optimum = steady_size(TARGET_EFFICIENCY * interval, per_row)
    target = optimum * per_row  # the duration the sizes settle at
    predicted = jobs_needed(START, round(optimum))
    within = next(
        (n for n in range(1, len(durations) + 1)
         if all(abs(x / target - 1) <= 0.10 for x in durations[n - 1 :])), None,
    )  # fmt: skip
    progress(f"  optimizer: {len(jobs)} jobs, sizes {[j.batch_size for j in jobs]}")
    progress(f"  optimizer: durations {[round(d, 3) for d in durations]}")
    label = f"interval {interval:g} s, start {START:,} rows, {len(jobs)} jobs"
    return [
        Row(SECTION, f"{label}: first job from which every job runs within ±10% of the steady"
            f" duration ({target / interval:.2f} × interval)",
            within if within is not None else f"not within {len(jobs)}", "jobs",
            predicted, "the ×1.2 rule's promise", within / predicted if within else None),
        Row(SECTION, f"{label}: longest job run (the runner's duration) ÷ interval",
            max(durations) / interval, "", goal=f"≤ {CEILING}"),
        Row(SECTION, f"{label}: longest job, started → finished ÷ interval",
            max(spans) / interval, "", goal=f"≤ {CEILING}"),
    ]  # fmt: skip
