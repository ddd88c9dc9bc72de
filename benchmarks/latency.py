"""Latency: from ``enqueue()`` returning to the operation's first sub-batch committed.

The goal: p50 ≤ 100 ms, p99 ≤ 1 s.

A real ``dramatiq`` worker process (``benchmarks.app``, ``--threads`` threads) runs the
pipeline on the dramatiq-pg broker; this process plays the web application: it configured
bbo and called ``setup(broker)``, so ``enqueue`` wakes the pipeline when it commits (an
orchestrator message written with the operation's stage lease). The operation
(:class:`benchmarks.operations.TouchAndNotify`) runs ``pg_notify`` inside each sub-batch's
transaction; Postgres delivers a notification exactly when its transaction commits, so the
time this process receives the first one for an operation is the time its first sub-batch
committed (plus the delivery, well under a millisecond on one host).

Path measured: enqueue's commit → wake (outbox message + NOTIFY) → worker consumer →
orchestrator (claim, job, runner message) → worker consumer → runner → first sub-batch commit.

``--warmup`` operations run first (imports, reflection, connection pools of the worker) and
are not counted; then ``--operations`` are measured one after the other, each waited for until
it finished so they do not overlap.

Usage::

    python benchmarks/latency.py                  # embedded Postgres, 50 operations
    python benchmarks/latency.py --dsn postgresql://postgres@127.0.0.1:5432/postgres -n 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dramatiq_bbo as bbo  # noqa: E402
from benchmarks.common import (  # noqa: E402
    Workers,
    fresh_database,
    make_broker,
    percentile,
    postgres,
    print_table,
    server_version,
)
from benchmarks.operations import NOTIFY_CHANNEL, TouchAndNotify  # noqa: E402
from dramatiq_bbo.state.records import OperationStatus  # noqa: E402

TABLE = "latency_rows"


def make_table(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
        conn.execute(f"INSERT INTO {TABLE} (id) SELECT generate_series(1, %s)", [rows])
        conn.execute(f"VACUUM ANALYZE {TABLE}")


def measure_one(
    listener: psycopg.Connection[Any], run: int, args: argparse.Namespace
) -> tuple[float, float]:
    """(enqueue duration, enqueue returned → first sub-batch committed), in seconds."""
    started = time.perf_counter()
    operation = bbo.enqueue(
        TouchAndNotify,
        TABLE,
        "id",
        arguments={"run": run},  # a new configuration each time: never a duplicate
        batch_size=args.rows,
        sub_batch_size=args.sub_batch,
        pause_ms=0,
        interval_seconds=0,
        min_batch_size=min(args.rows, 1000),
    ).operation
    enqueued = time.perf_counter()
    wanted = str(operation.id)
    committed = None
    for notification in listener.notifies(timeout=args.timeout):
        if notification.payload == wanted:
            committed = time.perf_counter()
            break
    if committed is None:
        raise RuntimeError(f"no sub-batch of operation {wanted} committed in {args.timeout}s")
    deadline = time.monotonic() + args.timeout
    while bbo.get_operation(operation.id).unfinished:  # let it end: runs never overlap
        if time.monotonic() > deadline:
            raise RuntimeError(f"operation {wanted} did not finish in {args.timeout}s")
        time.sleep(0.005)
    assert bbo.get_operation(operation.id).status == OperationStatus.FINISHED
    return enqueued - started, committed - enqueued


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="admin DSN of a server (default: embedded Postgres)")
    parser.add_argument("-n", "--operations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000, help="rows each operation visits")
    parser.add_argument("--sub-batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4, help="worker threads")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    with postgres(args.dsn) as admin_dsn, fresh_database(admin_dsn) as dsn:
        bbo.configure(dsn=dsn)
        bbo.setup(make_broker(dsn))  # as a web process does: enqueue wakes the pipeline
        make_table(dsn, args.rows)
        with (
            Workers(dsn, threads=args.threads),
            psycopg.connect(dsn, autocommit=True) as listener,
        ):
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            for run in range(args.warmup):
                measure_one(listener, -1 - run, args)
            results = [measure_one(listener, run, args) for run in range(args.operations)]
        version = server_version(dsn)
        bbo.reset()

    enqueue_s = [r[0] * 1000 for r in results]
    latency = [r[1] * 1000 for r in results]
    print(
        f"\nLatency: enqueue() returned → first sub-batch committed; {args.operations} operations"
        f" after {args.warmup} warm-up; 1 dramatiq worker process × {args.threads} threads;"
        f" Postgres {version}\n"
    )
    rows = [
        [name, percentile(v, 0.5), percentile(v, 0.99), min(v), max(v), statistics.fmean(v)]
        for name, v in (
            ("enqueue → first sub-batch committed", latency),
            ("enqueue() itself (for reference)", enqueue_s),
        )
    ]
    print_table(["milliseconds", "p50", "p99", "min", "max", "mean"], rows)
    print("\ngoal: p50 <= 100 ms, p99 <= 1,000 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
