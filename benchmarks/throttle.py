"""Throttle: what the health checks cost, how fast a stop bites, how fast a hold lets go.

The goals: the checks cost < 5% of sub-batch time; a stop takes effect within
one sub-batch (or one cache period of the indicator); a held operation resumes by itself.

The pipeline's stages run in this thread (orchestrator → runner, as a worker would run
their messages; no broker), on one job per operation so every sub-batch after the first is
preceded by the between-sub-batch check.

1. Cost. The same operation (a visit to every row) runs without the health checks, with the
   built-in indicators (answers cached ~1 s; thresholds set out of reach, so that a real
   autovacuum of the rows just updated cannot hold a run), and with the built-ins plus an
   uncached user callable (asked at every sub-batch, on a worker thread; it does not touch
   the connection). Between sub-batches the check serves the previous answers while fresh
   ones are asked for in the background (dramatiq_bbo/health/evaluator.py). The time spent
   in the check is measured around the hook itself and divided by the sub-batch time the
   job recorded, at two sub-batch sizes; the wall time of the runs is compared as well
   (alternating rounds, medians — only indicative on a busy machine).
2. Reaction. A user indicator turns to stop right after sub-batch k; the sub-batches that
   ran after that are read from the job's checkpoint (processed ÷ sub-batch size − k):
   uncached (at most one: the check before sub-batch k+1 may serve the answer asked for
   during sub-batch k), and cached for ``--cache`` seconds (one cache period may pass).
3. Resume. With ``health_hold_seconds=1`` and the signal normal again, the scheduler is
   ticked every 20 ms until it hands the operation back; from the hold's end (database
   time) to the job dispatched and to the operation finished. In production the scheduler
   ticks once a minute (or when woken), which bounds the resume delay instead.

Usage::

    python benchmarks/throttle.py                     # embedded Postgres
    python benchmarks/throttle.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dramatiq_bbo as bbo  # noqa: E402
from benchmarks.common import fresh_database, postgres, print_table, server_version  # noqa: E402
from dramatiq_bbo import health
from dramatiq_bbo.pipeline import (
    runtime,  # noqa: E402
    scheduler,  # noqa: E402
)
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate  # noqa: E402
from dramatiq_bbo.pipeline.runner import run  # noqa: E402
from dramatiq_bbo.state.records import JobRecord, OperationStatus  # noqa: E402

TABLE = "throttle_rows"
#: thresholds the cost runs' built-in indicators do not reach on a test server
NEVER_STOP = {
    "autovacuum_stop_on_any": False,
    "max_connection_ratio": 1.0,
    "max_transaction_age_seconds": 3600.0,
    "max_wal_bytes_per_second": 1 << 40,
}
#: what the app's indicator answers; the operation counts its sub-batches
STATE: dict[str, Any] = {"stop": False, "stop_after": None, "sub_batches": 0, "flipped": 0.0}


class Visit(bbo.BaseOperation):
    """A visit to every row; after ``stop_after`` sub-batches the app's indicator says stop."""

    name = "bench.throttle_visit"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            STATE["sub_batches"] += 1
            if STATE["sub_batches"] == STATE["stop_after"]:
                STATE["stop"], STATE["flipped"] = True, time.monotonic()


def app_signal(context: health.Context) -> Any:
    return (health.Signal.STOP, "app says stop") if STATE["stop"] else health.Signal.NORMAL


def reset_table(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
        conn.execute(f"INSERT INTO {TABLE} (id) SELECT generate_series(1, %s)", [rows])
        conn.execute(f"VACUUM ANALYZE {TABLE}")


def enqueue(rows: int, sub_batch: int) -> bbo.OperationRecord:
    return bbo.enqueue(
        Visit, TABLE, "id", batch_size=rows, sub_batch_size=sub_batch, min_batch_size=1,
        max_batch_size=rows, pause_ms=0, interval_seconds=0,
    ).operation  # fmt: skip


def dispatched_job(operation: bbo.OperationRecord) -> JobRecord:
    [job] = [j for j in bbo.list_jobs(operation) if j.status == 0 and j.lease_owner]
    return job


def drive(operation_id: Any) -> bbo.OperationRecord:
    """Orchestrator then runner, as their messages would, until the operation ends."""
    while True:
        current = bbo.get_operation(operation_id)
        if not current.unfinished:
            return current
        decision = orchestrate("main", current.id, current.lease_owner)
        if decision == Decision.FINISHED:
            continue
        if decision != Decision.DISPATCHED:
            return current
        run("main", current.id, dispatched_job(current).id)


# -- 1. cost --------------------------------------------------------------------------------------
class TimedHealth(health.HealthMiddleware):
    """The health middleware, its between-sub-batch gate timed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def between_sub_batches(self, operation: bbo.OperationRecord, job: Any) -> str | None:
        started = time.perf_counter()
        try:
            return super().between_sub_batches(operation, job)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def cost_run(dsn: str, args: argparse.Namespace, side: str, sub_batch: int) -> dict[str, float]:
    reset_table(dsn, args.rows)
    timed = TimedHealth()
    middleware = () if side == "no checks" else (timed,)
    if side.endswith("user callable"):
        health.register(app_signal, name="app")
    health.clear_cache()
    try:
        with runtime.installed(runtime.Runtime(middleware=middleware)):
            operation = enqueue(args.rows, sub_batch)
            started = time.perf_counter()
            final = drive(operation.id)
            wall = time.perf_counter() - started
    finally:
        health.unregister("app")
    assert final.status == OperationStatus.FINISHED, final
    metrics = [j.metrics for j in bbo.list_jobs(final)]
    sub_batch_seconds = sum(m["sub_batch_seconds"]["total"] for m in metrics)
    return {
        "wall": wall,
        "sub_batches": sum(m["sub_batches"] for m in metrics),
        "sub_batch_seconds": sub_batch_seconds,
        "check_seconds": timed.seconds,
        "checks": timed.calls,
    }


def measure_cost(dsn: str, args: argparse.Namespace, sub_batch: int) -> list[list[Any]]:
    sides = ["no checks", "built-ins (cached)", "built-ins + uncached user callable"]
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for round_ in range(args.repeat):
        for side in sides:
            runs[side].append(cost_run(dsn, args, side, sub_batch))
        print(f"cost, sub-batch {sub_batch}: round {round_ + 1}/{args.repeat}", file=sys.stderr)
    base = statistics.median(r["wall"] for r in runs["no checks"])
    rows = []
    for side in sides:
        values = runs[side]
        wall = statistics.median(r["wall"] for r in values)
        per_sub_batch = statistics.median(r["sub_batch_seconds"] / r["sub_batches"] for r in values)
        calls = sum(r["checks"] for r in values)
        per_check = sum(r["check_seconds"] for r in values) / calls if calls else 0.0
        share = statistics.median(r["check_seconds"] / r["sub_batch_seconds"] for r in values)
        rows.append(
            [sub_batch, side, wall, per_sub_batch * 1000, per_check * 1000, f"{share:.2%}",
             f"{wall / base - 1:+.1%}"]
        )  # fmt: skip
    return rows


# -- 2. reaction --------------------------------------------------------------------------------
def reaction_run(dsn: str, args: argparse.Namespace, cache: float) -> tuple[int, float, float]:
    """(sub-batches after the stop, seconds from the stop to the job's end, sub-batch s)."""
    reset_table(dsn, args.rows)
    STATE.update(stop=False, stop_after=args.stop_after, sub_batches=0)
    health.register(app_signal, name="app", cache_seconds=cache)
    previous = runtime.install(runtime.Runtime(middleware=(health.HealthMiddleware(),)))
    health.clear_cache()
    try:
        operation = enqueue(args.rows, args.sub_batch)
        # warm the cache with a normal answer, as a running operation would have
        health.evaluate(operation)
        assert orchestrate("main", operation.id, None) == Decision.DISPATCHED
        outcome = run("main", operation.id, dispatched_job(operation).id)
        ended = time.monotonic()
    finally:
        runtime.install(previous)
        health.unregister("app")
    assert outcome is not None and outcome.interrupted_reason == "health_stop", outcome
    job = outcome.job
    held = bbo.get_operation(operation.id)
    assert held.hold_reason == "app: app says stop", held
    bbo.cancel(operation.id)  # held: the next trial enqueues a fresh one
    after = job.processed_tuple_count // args.sub_batch - args.stop_after
    per_sub_batch = job.metrics["sub_batch_seconds"]["p50"]
    return after, ended - STATE["flipped"], per_sub_batch


def measure_reaction(dsn: str, args: argparse.Namespace) -> list[list[Any]]:
    rows = []
    for cache in (0.0, args.cache):
        trials = [reaction_run(dsn, args, cache) for _ in range(args.trials)]
        afters = [t[0] for t in trials]
        per_sub_batch = statistics.median(t[2] for t in trials)
        rows.append(
            [
                f"user indicator, cache {cache:g} s",
                " ".join(str(a) for a in afters),
                max(afters),
                per_sub_batch * 1000,
                max(t[1] for t in trials) * 1000,
            ]
        )
    return rows


# -- 3. resume ------------------------------------------------------------------------------------
def resume_run(dsn: str, args: argparse.Namespace) -> tuple[float, float]:
    """(hold end → job dispatched, hold end → operation finished), seconds."""
    reset_table(dsn, args.rows)
    STATE.update(stop=False, stop_after=args.stop_after, sub_batches=0)
    health.register(app_signal, name="app")
    previous = runtime.install(runtime.Runtime(middleware=(health.HealthMiddleware(),)))
    health.clear_cache()
    try:
        operation = enqueue(args.rows, args.sub_batch)
        assert orchestrate("main", operation.id, None) == Decision.DISPATCHED
        run("main", operation.id, dispatched_job(operation).id)
        held = bbo.get_operation(operation.id)
        assert orchestrate("main", held.id, held.lease_owner) == Decision.ON_HOLD
        STATE["stop"] = False  # normal again; the hold still has to expire
        while str(held.id) not in scheduler.tick("main").dispatched:
            time.sleep(0.02)
        current = bbo.get_operation(held.id)
        assert orchestrate("main", held.id, current.lease_owner) == Decision.DISPATCHED
        dispatched_at = db_now(dsn)
        run("main", held.id, dispatched_job(current).id)
        final = drive(held.id)
    finally:
        runtime.install(previous)
        health.unregister("app")
    assert final.status == OperationStatus.FINISHED and final.finished_at is not None
    assert held.on_hold_until is not None
    with psycopg.connect(dsn) as conn:
        [visits] = conn.execute(f"SELECT DISTINCT visits FROM {TABLE}").fetchall()
    assert visits == (1,), visits  # every row exactly once
    return (
        (dispatched_at - held.on_hold_until).total_seconds(),
        (final.finished_at - held.on_hold_until).total_seconds(),
    )


def db_now(dsn: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def measure_resume(dsn: str, args: argparse.Namespace) -> list[list[Any]]:
    trials = [resume_run(dsn, args) for _ in range(args.trials)]
    return [
        ["hold end → job dispatched", *(_stats([t[0] for t in trials]))],
        ["hold end → operation finished", *(_stats([t[1] for t in trials]))],
    ]


def _stats(values: list[float]) -> list[float]:
    return [statistics.median(values) * 1000, max(values) * 1000]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="admin DSN of a server (default: embedded Postgres)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sub-batch", type=int, default=500, help="reaction and resume runs")
    parser.add_argument(
        "--cost-sub-batches", default="500,5000", help="sub-batch sizes of the cost runs"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the cost runs")
    parser.add_argument("--trials", type=int, default=5, help="runs of reaction and resume")
    parser.add_argument("--stop-after", type=int, default=10, help="k: sub-batches, then stop")
    parser.add_argument("--cache", type=float, default=0.1, help="cached indicator's period")
    args = parser.parse_args(argv)
    logging.getLogger("dramatiq_bbo").addHandler(logging.NullHandler())  # events: not printed

    with postgres(args.dsn) as admin_dsn, fresh_database(admin_dsn, "bbo_throttle") as dsn:
        # the built-ins are asked with thresholds they will not reach here (a real autovacuum
        # of the rows just updated, say), so that every run finishes and costs the same
        bbo.configure(dsn=dsn, health_hold_seconds=1, health=NEVER_STOP)
        installed = [i.name for i in health.configured(health.settings.current())]
        sizes = [int(size) for size in args.cost_sub_batches.split(",")]
        cost = [row for size in sizes for row in measure_cost(dsn, args, size)]
        # reaction and resume: the app's indicator alone decides
        off = {"disabled_indicators": list(health.BUILTIN_INDICATORS)}
        bbo.configure(dsn=dsn, health_hold_seconds=1, health=off)
        reaction = measure_reaction(dsn, args)
        resume = measure_resume(dsn, args)
        version = server_version(dsn)
        bbo.reset()

    print(
        f"\nThrottle: {args.rows:,} rows, one job, pause 0; "
        f"Postgres {version}; built-in indicators: {', '.join(installed)}\n"
    )
    print(f"1. Cost of the checks (median of {args.repeat} alternating rounds)\n")
    print_table(
        ["rows", "side", "wall s", "sub-batch ms", "check ms", "check ÷ sub-batch", "wall vs none"],
        cost,
    )
    print(
        "\ngoal: check ÷ sub-batch < 5% (check time measured around the hook; the wall"
        " times are only indicative on a busy machine)"
    )
    print(f"\n2. Reaction: the indicator says stop after sub-batch {args.stop_after} of "
          f"{args.sub_batch} rows ({args.trials} trials)\n")  # fmt: skip
    print_table(
        ["indicator", "sub-batches after stop", "max", "sub-batch ms", "stop → job end ms"],
        reaction,
    )
    print(
        "\ngoal: ≤ 1 sub-batch after the stop uncached; cached, the job ends within about one"
        " cache period (+ the sub-batch under way, the one after the check that asked afresh,"
        " and the hold and job-end writes)"
    )
    print(f"\n3. Resume after a 1 s hold, scheduler ticked every 20 ms ({args.trials} trials)\n")
    print_table(["", "median ms", "max ms"], resume)
    print("\nin production the scheduler ticks once a minute: a hold ends within 60 s of expiry")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- the section of benchmarks.run ------------------------------------------------------------
def section(ctx: Any) -> list[Any]:
    """Reaction and resume (the cost runs stay in ``python benchmarks/throttle.py``): the
    app's indicator alone decides, the built-ins are off."""
    from benchmarks.common import Row, bench_database, progress

    args = argparse.Namespace(
        rows=100_000, sub_batch=500, stop_after=10, cache=0.1,
        trials=ctx.pick(3, 5),
    )  # fmt: skip
    logging.getLogger("dramatiq_bbo").addHandler(logging.NullHandler())
    off = {"disabled_indicators": list(health.BUILTIN_INDICATORS)}
    with bench_database(
        ctx, "bbo_bench_throttle", broker=False, health_hold_seconds=1, health=off
    ) as dsn:
        reaction = measure_reaction(dsn, args)
        resume = measure_resume(dsn, args)
    progress(f"  throttle: {args.trials} trials each")
    rows = []
    for label, afters, most, per_sub_batch, stop_to_end in reaction:
        rows.append(
            Row("throttle", f"{label}: sub-batches run after the stop (trials: {afters})",
                most, "", goal="≤ 1 uncached; cached: ≈ cache ÷ sub-batch")
        )  # fmt: skip
        rows.append(
            Row("throttle", f"{label}: stop → job ended (max)", stop_to_end, "ms",
                round(per_sub_batch, 2), "one sub-batch", stop_to_end / per_sub_batch)
        )  # fmt: skip
    dispatched, finished = resume
    rows.append(
        Row("throttle", "1 s hold ended → job dispatched (scheduler ticked every 20 ms), median",
            dispatched[1], "ms", goal="≤ one scheduler pass")
    )  # fmt: skip
    return rows
