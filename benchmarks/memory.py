"""Worker memory over a long operation: the resident set (RSS) of the one worker process,
sampled while it runs one operation of many sub-batches.

One operation visits every row of a large table (``bench.touch_and_notify``, sub-batch 100,
pause 0, interval 0: jobs grow by the optimizer). The baseline is the worker's RSS after a
warm-up operation (imports, pools, reflection done), measured in the same run. A leak shows
as growth between the middle and the end of the run, given per 1,000 sub-batches.
"""

from __future__ import annotations

import time

import psycopg

import dramatiq_bbo as bbo
from benchmarks.common import Context, Row, Workers, bench_database, progress, wait_finished
from benchmarks.operations import TouchAndNotify
from dramatiq_bbo.state.records import OperationStatus

SECTION = "memory"
SUB_BATCH = 100
MIB = 1024 * 1024


def run_one(workers: Workers, table: str, rows: int) -> list[tuple[float, int, int]]:
    """(seconds, RSS bytes, rows done) samples while one operation over ``rows`` runs."""
    operation = bbo.enqueue(
        TouchAndNotify, table, "id", batch_size=10_000,
        sub_batch_size=SUB_BATCH, pause_ms=0, interval_seconds=0,
        min_batch_size=1_000, max_batch_size=rows,
    ).operation  # fmt: skip
    started, samples = time.monotonic(), []
    while True:
        current = bbo.get_operation(operation.id)
        samples.append((time.monotonic() - started, workers.rss_bytes(),
                        current.processed_tuple_count))  # fmt: skip
        if not current.unfinished:
            break
        if time.monotonic() - started > 900:
            raise RuntimeError(f"operation {operation.id} did not finish in 900 s")
        time.sleep(0.25)
    assert wait_finished(operation.id, 1).status == OperationStatus.FINISHED
    return samples


def section(ctx: Context) -> list[Row]:
    rows = ctx.pick(300_000, 3_000_000)
    with bench_database(ctx, "bbo_bench_mem") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE memory_rows (id bigint PRIMARY KEY, visits int DEFAULT 0)")
            conn.execute("INSERT INTO memory_rows (id) SELECT generate_series(1, %s)", [rows])
            conn.execute("CREATE TABLE memory_warm (id bigint PRIMARY KEY, visits int DEFAULT 0)")
            conn.execute("INSERT INTO memory_warm (id) SELECT generate_series(1, 1000)")
            conn.execute("VACUUM ANALYZE memory_rows")
        with Workers(dsn, processes=1, threads=ctx.threads) as workers:
            run_one(workers, "memory_warm", 1_000)  # imports, pools, reflection
            baseline = workers.rss_bytes()
            samples = run_one(workers, "memory_rows", rows)
    middle = next(s for s in samples if s[2] >= rows // 2)
    end = samples[-1]
    growth = (end[1] - middle[1]) / MIB / max(1, (end[2] - middle[2]) / SUB_BATCH / 1000)
    progress(f"  memory: {len(samples)} samples over {end[0]:.0f} s")
    label = f"{rows:,} rows in sub-batches of {SUB_BATCH} ({rows // SUB_BATCH:,})"
    peak = max(s[1] for s in samples) / MIB
    return [
        Row(SECTION, f"{label}: worker RSS, peak", peak, "MiB", round(baseline / MIB, 1),
            "RSS after a warm-up operation", peak / (baseline / MIB)),
        Row(SECTION, f"{label}: RSS growth, second half", growth, "MiB / 1,000 sub-batches",
            goal="≈ 0"),
    ]  # fmt: skip
