"""Latency: from ``enqueue()`` returning to the operation's first sub-batch committed, against
one bare dramatiq-pg message hop measured in the same run.

The goals: p50 ≤ 1.5 × the hop's p50, p99 ≤ 30 ms, with a warm worker.

A real ``dramatiq`` worker process (``benchmarks.app``, 4 threads) runs the pipeline on the
dramatiq-pg broker; this process plays the web application: it configured bbo and called
``setup(broker)``, so ``enqueue`` starts the operation when it commits: with a free slot and
nothing waiting (always, here) it dispatches the first job and writes the runner's message in
its own transaction — one message hop to the worker, like the bare hop below. The operation
(:class:`benchmarks.operations.Notify`) runs ``pg_notify`` inside each sub-batch's
transaction, and nothing else: the one statement the hop's actor runs, so the two figures
differ by the path to the database, not by the work. Postgres delivers a notification exactly
when its transaction commits, so the time this process receives the first one for an
operation is the time its first sub-batch committed. The hop (:mod:`benchmarks.hop`): a
message sent to an actor that only notifies, timed from ``send()`` to the notification, the
same way.

Warm-up operations and hops run first (imports, reflection, connection pools of the worker) and
are not counted; then operations and hops alternate, each waited for (operations until they
finished) so they never overlap. p99 is the nearest-rank percentile.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from benchmarks import hop
from benchmarks.common import (
    Context,
    Row,
    Workers,
    bench_database,
    make_broker,
    percentile,
    progress,
    wait_finished,
)
from benchmarks.operations import NOTIFY_CHANNEL, Notify
from dramatiq_bbo.state.records import OperationStatus

SECTION = "latency"
TABLE = "latency_rows"
ROWS = 1_000
TIMEOUT = 30.0


def first_notification(listener: psycopg.Connection[Any], wanted: str) -> float:
    for notification in listener.notifies(timeout=TIMEOUT):
        if notification.payload == wanted:
            return time.perf_counter()
    raise RuntimeError(f"no notification {wanted} in {TIMEOUT}s")


def one_operation(listener: psycopg.Connection[Any], run: int) -> float:
    """Seconds from enqueue() returned to the first sub-batch committed."""
    operation = bbo.enqueue(
        Notify, TABLE, "id",
        arguments={"run": run},  # a new configuration each time: never a duplicate
        batch_size=ROWS, sub_batch_size=100, pause_ms=0, interval_seconds=0,
        min_batch_size=ROWS,
    ).operation  # fmt: skip
    enqueued = time.perf_counter()
    committed = first_notification(listener, str(operation.id))
    final = wait_finished(operation.id, TIMEOUT, poll=0.005)  # runs never overlap
    assert final.status == OperationStatus.FINISHED, final
    return committed - enqueued


def one_hop(listener: psycopg.Connection[Any], actor: Any) -> float:
    """Seconds from send() to the actor's notification."""
    token = uuid.uuid4().hex
    started = time.perf_counter()
    actor.send(token)
    return first_notification(listener, token) - started


def section(ctx: Context) -> list[Row]:
    count, warmup = ctx.pick(30, 200), 5
    with bench_database(ctx, "bbo_bench_lat") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, visits int DEFAULT 0)")
            conn.execute(f"INSERT INTO {TABLE} (id) SELECT generate_series(1, %s)", [ROWS])
            conn.execute(f"VACUUM ANALYZE {TABLE}")
        actor = hop.declare(make_broker(dsn), dsn)
        with Workers(dsn, threads=ctx.threads), psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            listener.execute(f"LISTEN {hop.CHANNEL}")
            for run in range(warmup):
                one_operation(listener, -1 - run)
                one_hop(listener, actor)
            operations, hops = [], []
            for run in range(count):
                operations.append(one_operation(listener, run) * 1000)
                hops.append(one_hop(listener, actor) * 1000)
        actor.broker.close()
    progress(f"  latency: {count} operations and hops after {warmup} warm-up")
    hop50, hop99 = percentile(hops, 0.5), percentile(hops, 0.99)
    label = f"enqueue → first sub-batch committed ({count} runs)"
    return [
        Row(SECTION, f"{label}, p50", percentile(operations, 0.5), "ms", round(hop50, 2),
            "bare dramatiq-pg hop p50", percentile(operations, 0.5) / hop50, "≤ 1.5"),
        Row(SECTION, f"{label}, p99", percentile(operations, 0.99), "ms", round(hop99, 2),
            "bare dramatiq-pg hop p99", percentile(operations, 0.99) / hop99, "≤ 30 ms"),
    ]  # fmt: skip
