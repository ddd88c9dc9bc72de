"""Throughput: the framework against a hand-written psycopg keyset delete loop.

The goal: framework throughput ÷ hand-written loop (same sub-batch size, pause 0) ≥ 0.90 at
sub-batch 1,000 and ≥ 0.85 at sub-batch 100, through ``run_to_completion`` and through one
real worker.

Each round first fills one fresh table per side (so no side's measurement overlaps the next
table's fill: the WAL of a fill would otherwise trip the WAL-rate indicator of the side being
measured), then deletes them, one side after the other, in an order rotated each round (drift
in the machine's load hits every side alike); the medians of the rounds are compared:

- **hand loop** (the baseline): the classic keyset delete, one transaction per sub-batch:
  ``SELECT id ... WHERE id > last ORDER BY id OFFSET n-1 LIMIT 1`` then ``DELETE ... WHERE
  id > last AND id <= that id`` — no checkpoint, no lease, no guard. (The one-statement
  variant ``DELETE ... WHERE id IN (SELECT id ... LIMIT n)`` is several times slower: the
  planner hash-joins the whole table. We compare with the fast one.)
- **hand loop + checkpoint**: the same, also updating a one-row checkpoint (last id, rows
  done, ``updated_at``) in each sub-batch's transaction: the least any resumable loop does;
- **hand loop + checkpoint, synchronous_commit off**: the same, its commits not waiting
  for the WAL flush, as the framework's sub-batches commit by default
  (``sub_batch_synchronous_commit``): the like-for-like baseline; the framework's ratio
  against it is printed with the rows of this side;
- **single DELETE**: ``DELETE FROM t`` in one statement, the ceiling of what batching costs;
- **run_to_completion**: ``bbo.enqueue`` + ``bbo.run_to_completion`` in this process (no
  broker hop): jobs of ``batch`` rows, sub-batch transactions with their checkpoints;
- **one dramatiq worker**: ``bbo.enqueue`` here, the work done by one real ``dramatiq`` worker
  process (``benchmarks.app``, 4 threads) through the scheduler/orchestrator/runner messages;
  timed from the operation's ``created_at`` to its ``finished_at`` (database clock). The
  batch optimizer is on (interval 0): jobs grow from ``batch``.

The health indicators of ``DISABLED_INDICATORS`` (autovacuum, WAL rate) are off on the
framework sides (in this process and in the worker): deleting at full speed is what this
measures, and those indicators would rightly hold it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

import dramatiq_bbo as bbo
from benchmarks.common import (
    Context,
    Row,
    Workers,
    bench_database,
    execute,
    median,
    progress,
    wait_finished,
)
from benchmarks.operations import DeleteAll
from dramatiq_bbo.state.records import OperationStatus

SECTION = "throughput"
BATCH = 10_000
HAND = "hand loop"
#: the like-for-like baseline of the framework's default (sub_batch_synchronous_commit off)
ASYNC_HAND = "hand loop + checkpoint, synchronous_commit off"


def make_table(dsn: str, table: str, rows: int) -> None:
    name = sql.Identifier(table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, payload text NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            ).format(name)
        )
        insert = "INSERT INTO {} (id, payload) SELECT g, md5(g::text) FROM generate_series(1, %s) g"
        conn.execute(sql.SQL(insert).format(name), [rows])
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))


def checkpoint_server(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error:  # needs superuser or pg_checkpoint
            pass


def remaining(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return int(row.fetchone()[0])  # type: ignore[index]


def hand_loop(
    dsn: str, table: str, sub_batch: int, checkpoint: bool = False, wait_flush: bool = True
) -> float:
    """The keyset loop: per sub-batch one transaction that finds the sub-batch's last id (an
    index-only ``OFFSET``) and deletes the range up to it; with ``checkpoint``, it also
    updates a one-row checkpoint in the same transaction; without ``wait_flush``, it commits
    with ``synchronous_commit = off``, as the framework's sub-batches do by default."""
    t = sql.Identifier(table)
    upper = sql.SQL("SELECT id FROM {} WHERE id > %s ORDER BY id OFFSET %s LIMIT 1").format(t)
    delete_range = sql.SQL("DELETE FROM {} WHERE id > %s AND id <= %s").format(t)
    delete_rest = sql.SQL("DELETE FROM {} WHERE id > %s").format(t)
    save = (
        "UPDATE bench_checkpoint SET last_id = %s, done = done + %s, updated_at = now()"
        " WHERE id = 1"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not wait_flush:
            conn.execute("SET synchronous_commit = off")
        if checkpoint:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_checkpoint (id int PRIMARY KEY,"
                " last_id bigint, done bigint NOT NULL DEFAULT 0, updated_at timestamptz)"
            )
            conn.execute("INSERT INTO bench_checkpoint (id) VALUES (1) ON CONFLICT DO NOTHING")
        started = time.perf_counter()
        last = 0
        while True:
            with conn.transaction():
                row = conn.execute(upper, [last, sub_batch - 1]).fetchone()
                if row is None:
                    deleted = conn.execute(delete_rest, [last]).rowcount
                    if checkpoint:
                        conn.execute(save, [None, deleted])
                    break
                deleted = conn.execute(delete_range, [last, row[0]]).rowcount
                if checkpoint:
                    conn.execute(save, [row[0], deleted])
                last = row[0]
        return time.perf_counter() - started


def single_delete(dsn: str, table: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        return time.perf_counter() - started


def enqueue(table: str, sub_batch: int, connection: Any = None) -> Any:
    return bbo.enqueue(
        DeleteAll, table, "id", batch_size=BATCH, sub_batch_size=sub_batch, pause_ms=0,
        interval_seconds=0, min_batch_size=min(BATCH, 1000), connection=connection,
    ).operation  # fmt: skip


def in_process(dsn: str, table: str, sub_batch: int) -> float:
    # enqueued inside our own transaction: no wake-up, so no worker ever sees this operation;
    # the clock starts once connected, as the hand loop's does
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        operation = enqueue(table, sub_batch, connection=conn)
        conn.commit()
    final = bbo.run_to_completion(operation.id)
    elapsed = time.perf_counter() - started
    assert final.status == OperationStatus.FINISHED, final
    return elapsed


def with_worker(table: str, sub_batch: int) -> float:
    operation = enqueue(table, sub_batch)  # wakes the pipeline: the worker takes it from there
    final = wait_finished(operation.id, timeout=600)
    assert final.status == OperationStatus.FINISHED, final
    return float((final.finished_at - final.created_at).total_seconds())


def sides(dsn: str, sub_batch: int) -> dict[str, Callable[[str], float]]:
    return {
        HAND: lambda t: hand_loop(dsn, t, sub_batch),
        "hand loop + one-row checkpoint": lambda t: hand_loop(dsn, t, sub_batch, True),
        ASYNC_HAND: lambda t: hand_loop(dsn, t, sub_batch, True, wait_flush=False),
        "single DELETE": lambda t: single_delete(dsn, t),
        "run_to_completion": lambda t: in_process(dsn, t, sub_batch),
        "one dramatiq worker (4 threads)": lambda t: with_worker(t, sub_batch),
    }


def measure(ctx: Context, dsn: str, rows: int, sub_batch: int) -> dict[str, list[float]]:
    runs = sides(dsn, sub_batch)
    seconds: dict[str, list[float]] = {side: [] for side in runs}
    names = list(runs)
    for round_ in range(ctx.repeat):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        tables = {side: f"bench_{sub_batch}_{round_}_{names.index(side)}" for side in order}
        for table in tables.values():  # every fill before any measurement
            make_table(dsn, table, rows)
        checkpoint_server(dsn)
        for side in order:
            elapsed = runs[side](tables[side])
            left = remaining(dsn, tables[side])
            assert left == 0, f"{side} left {left} rows"
            seconds[side].append(elapsed)
            execute(dsn, sql.SQL("DROP TABLE {}").format(sql.Identifier(tables[side])))
        progress(f"  throughput sub-batch {sub_batch}: round {round_ + 1}/{ctx.repeat}")
    return seconds


def section(ctx: Context) -> list[Row]:
    rows = ctx.pick(200_000, 500_000)
    result = []
    with bench_database(ctx, "bbo_bench_tp") as dsn, Workers(dsn, threads=ctx.threads):
        make_table(dsn, "bench_warm_up", 2_000)  # the worker's imports, pools, reflection
        with_worker("bench_warm_up", 1_000)
        for sub_batch in (1_000, 100):
            seconds = measure(ctx, dsn, rows, sub_batch)
            hand = rows / median(seconds[HAND])
            for side, values in seconds.items():
                rate = rows / median(values)
                row = Row(SECTION, f"delete {rows:,} rows, sub-batch {sub_batch:,}: {side}",
                          rate, "rows/s")  # fmt: skip
                if side != HAND:
                    row.baseline, row.baseline_name, row.ratio = round(hand), HAND, rate / hand
                if side.startswith(("run_to", "one dramatiq")):
                    row.goal = f"≥ {0.90 if sub_batch == 1000 else 0.85:.2f}"
                result.append(row)
            result += like_for_like(seconds, rows, sub_batch)
    return result


def like_for_like(seconds: dict[str, list[float]], rows: int, sub_batch: int) -> list[Row]:
    """The framework's sides against the hand loop that commits as they do (no goal: these
    rows say how much of the ratio above comes from not waiting for WAL flushes)."""
    baseline = rows / median(seconds[ASYNC_HAND])
    figures = []
    for side in ("run_to_completion", "one dramatiq worker (4 threads)"):
        rate = rows / median(seconds[side])
        row = Row(SECTION, f"delete {rows:,} rows, sub-batch {sub_batch:,}: {side}, like for like",
                  rate, "rows/s")  # fmt: skip
        row.baseline, row.baseline_name, row.ratio = round(baseline), ASYNC_HAND, rate / baseline
        figures.append(row)
    return figures
