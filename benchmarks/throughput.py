"""Throughput: the framework against a hand-written psycopg keyset delete loop.

The goal: framework throughput ÷ hand-written loop (same sub-batch size, pause 0) ≥ 0.90.

Each round deletes a fresh ``--rows`` table three ways, in turn (so drift in the machine's load
hits every side alike), and the medians of ``--repeat`` rounds are compared:

- **hand loop**: the classic keyset delete, one transaction per sub-batch: ``SELECT id ...
  WHERE id > last ORDER BY id OFFSET n-1 LIMIT 1`` then ``DELETE ... WHERE id > last AND
  id <= that id`` — no checkpoint, no lease, no guard. (The one-statement variant
  ``DELETE ... WHERE id IN (SELECT id ... LIMIT n)`` is ~8× slower on 200,000 rows: the
  planner hash-joins the whole table. We compare with the fast one.)
- **run_to_completion**: ``bbo.enqueue`` + ``bbo.run_to_completion`` in this process (no
  broker): jobs of ``--batch-size`` rows, sub-batch transactions with their checkpoints;
- **dramatiq workers**: ``bbo.enqueue`` here, the work done by a real ``dramatiq`` worker
  process (``benchmarks.app``) through scheduler/orchestrator/runner messages on the
  dramatiq-pg broker; timed from the operation's ``created_at`` to its ``finished_at``
  (database clock). The batch optimizer is on (interval 0): jobs grow from ``--batch-size``.

Usage::

    python benchmarks/throughput.py                      # embedded Postgres, 200,000 rows
    python benchmarks/throughput.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        --rows 1000000 --sub-batch 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dramatiq_bbo as bbo  # noqa: E402
from benchmarks.common import (  # noqa: E402
    Workers,
    fresh_database,
    make_broker,
    median,
    postgres,
    print_table,
    server_version,
)
from benchmarks.operations import DeleteAll  # noqa: E402
from dramatiq_bbo.state.records import OperationStatus  # noqa: E402


def make_table(dsn: str, table: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        name = sql.Identifier(table)
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
        with contextlib.suppress(psycopg.Error):  # needs superuser or pg_checkpoint
            conn.execute("CHECKPOINT")


def remaining(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return int(row.fetchone()[0])  # type: ignore[index]


def hand_loop(dsn: str, table: str, sub_batch: int) -> float:
    """The classic keyset loop: per sub-batch, one transaction that finds the sub-batch's last
    id (an index-only ``OFFSET``) and deletes the range up to it."""
    t = sql.Identifier(table)
    upper = sql.SQL("SELECT id FROM {} WHERE id > %s ORDER BY id OFFSET %s LIMIT 1").format(t)
    delete_range = sql.SQL("DELETE FROM {} WHERE id > %s AND id <= %s").format(t)
    delete_rest = sql.SQL("DELETE FROM {} WHERE id > %s").format(t)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        last = 0
        while True:
            with conn.transaction():
                row = conn.execute(upper, [last, sub_batch - 1]).fetchone()
                if row is None:
                    conn.execute(delete_rest, [last])
                    break
                conn.execute(delete_range, [last, row[0]])
                last = row[0]
        return time.perf_counter() - started


def enqueue(table: str, args: argparse.Namespace, connection: Any = None) -> Any:
    return bbo.enqueue(
        DeleteAll,
        table,
        "id",
        batch_size=args.batch_size,
        sub_batch_size=args.sub_batch,
        pause_ms=0,
        interval_seconds=0,
        min_batch_size=min(args.batch_size, 1000),
        connection=connection,
    ).operation


def in_process(dsn: str, table: str, args: argparse.Namespace) -> float:
    started = time.perf_counter()
    # enqueued inside our own transaction: no wake-up, so no worker ever sees this operation
    with psycopg.connect(dsn) as conn:
        operation = enqueue(table, args, connection=conn)
        conn.commit()
    final = bbo.run_to_completion(operation.id)
    elapsed = time.perf_counter() - started
    assert final.status == OperationStatus.FINISHED, final
    return elapsed


def with_workers(dsn: str, table: str, args: argparse.Namespace) -> float:
    operation = enqueue(table, args)  # wakes the pipeline: the worker takes it from there
    deadline = time.monotonic() + 600
    while True:
        current = bbo.get_operation(operation.id)
        if not current.unfinished:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"operation {operation.id} did not finish: {current}")
        time.sleep(0.01)
    assert current.status == OperationStatus.FINISHED, current
    assert current.finished_at is not None
    return (current.finished_at - current.created_at).total_seconds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="admin DSN of a server (default: embedded Postgres)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--sub-batch", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="worker threads")
    parser.add_argument("--no-workers", action="store_true", help="skip the dramatiq side")
    args = parser.parse_args(argv)

    with postgres(args.dsn) as admin_dsn, fresh_database(admin_dsn) as dsn:
        bbo.configure(dsn=dsn)
        sides: dict[str, Callable[[str, str], float]] = {
            "hand-written psycopg loop": lambda d, t: hand_loop(d, t, args.sub_batch),
            "bbo run_to_completion": lambda d, t: in_process(d, t, args),
        }
        workers: Any = contextlib.nullcontext()
        if not args.no_workers:
            bbo.setup(make_broker(dsn))  # as a web process does: enqueue wakes the pipeline
            workers = Workers(dsn, threads=args.threads)
            sides["bbo dramatiq worker (1 process)"] = lambda d, t: with_workers(d, t, args)
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        with workers:
            for round_ in range(args.repeat):
                for index, (side, run) in enumerate(sides.items()):
                    table = f"bench_{round_}_{index}"
                    make_table(dsn, table, args.rows)
                    elapsed = run(dsn, table)
                    left = remaining(dsn, table)
                    assert left == 0, f"{side} left {left} rows"
                    seconds[side].append(elapsed)
                    print(f"round {round_ + 1} {side}: {args.rows / elapsed:,.0f} rows/s",
                          file=sys.stderr)  # fmt: skip
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        version = server_version(dsn)
        bbo.reset()

    print(
        f"\nThroughput: delete {args.rows:,} rows, sub-batch {args.sub_batch:,}, "
        f"batch {args.batch_size:,}, pause 0; Postgres {version}; "
        f"median of {args.repeat} alternating rounds\n"
    )
    hand = median(seconds["hand-written psycopg loop"])
    rows = []
    for side, values in seconds.items():
        rates = [args.rows / s for s in values]
        rows.append(
            [
                side,
                " ".join(f"{r:,.0f}" for r in rates),
                args.rows / median(values),
                hand / median(values),
            ]
        )
    print_table(["side", "rows/s per round", "median rows/s", "÷ hand loop"], rows)
    print("\ngoal: framework ÷ hand loop >= 0.90")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
