"""Time to finish at the default settings (interval 120 s, first job 1,000 rows, sub-batch
100, pause 100 ms, the optimizer's default growth), on a simulated clock.

Two scenarios, run for real against Postgres, one job at a time:

- **a user's done todos**: 124,000 todos, 62,000 of them one user's (of which 15,500 done);
  a scoped operation (``user_id``, served by an index on ``(user_id, id)``) deletes that
  user's done ones, walking the user's 62,000 rows;
- **an hourly purge**: 200,000 rows of which 30,000 expired, purged by an unscoped operation
  walking all of them; fired twice, the table brought back to 200,000 rows with 30,000
  expired between the firings (30,000 new rows, 30,000 old ones expired). The second firing
  is enqueued like the first and must start from the size the first one learned.

Each job is created and run as the pipeline's runner runs it (``run_next_job``), and the
transaction after it is the runner's own (:func:`dramatiq_bbo.pipeline.runner.chain`: the
optimizer's decision, the finish with the last job, the size learned); this process holds
the operation's stage lease, so ``chain`` sends no orchestrator message. The time budget
(1.5 × interval) stops a job at its checkpoint as the runner's does.

**The clock.** The waits are simulated, the work is not: the next job starts
``max(interval, job duration)`` after this one started (the pipeline's rule: due one interval
after the previous job started), and the pause between sub-batches (100 ms) advances the
clock instead of sleeping, so a job's duration — the one recorded on the job row, which the
optimizer sizes with — is its real work plus its simulated pauses. The section takes seconds
of wall time for what takes minutes at these settings. Not simulated: dispatch (one broker hop
per job, milliseconds) and the health checks between sub-batches (not run here; the
``autovacuum`` and ``wal_rate`` indicators are off as in every section).

``--quick`` runs the same sizes (the goals are set at them; the section takes about 20 s of
wall time either way). Baseline of a time to finish: the jobs' own durations back to back
(the work). Goals: the todo delete ≤ 5 minutes, the purge's second firing ≤ 10
minutes from its learned size, no job above 0.95 × interval.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from benchmarks.common import Context, Row, bench_database, progress
from dramatiq_bbo.db import DEFAULT_DATABASE, REGISTRY
from dramatiq_bbo.jobs import run as job_run
from dramatiq_bbo.jobs.ending import end_operation, status_stop_check
from dramatiq_bbo.jobs.heartbeat import HEARTBEAT, release_stage, take_stage
from dramatiq_bbo.jobs.optimizer import CEILING
from dramatiq_bbo.jobs.outcomes import JobOutcome
from dramatiq_bbo.pipeline.runner import chain
from dramatiq_bbo.queries import query
from dramatiq_bbo.state.records import OperationRecord, OperationStatus
from dramatiq_bbo.state.store import fetch_operation, tables_for
from dramatiq_bbo.walk.checkpoint import SubBatchEngine

SECTION = "defaults"


class DeleteDoneTodos(bbo.BaseOperation):
    """One user's done todos: the scoped delete of the issue, at the default settings."""

    name = "bench.defaults.delete_done_todos"
    operation_name = "delete_done_todos"
    feature_category = "benchmarks"

    def scope(self, query: Any) -> Any:
        return query.where(self.table.user_id == self.arguments["user_id"])

    def process(self, sub_batch: bbo.SubBatch) -> None:
        sub_batch.where(self.table.done == True).delete()  # noqa: E712


class PurgeExpired(bbo.BaseOperation):
    """The hourly purge: delete the rows expired before the firing."""

    name = "bench.defaults.purge_expired"
    operation_name = "purge_expired"
    feature_category = "benchmarks"

    def process(self, sub_batch: bbo.SubBatch) -> None:
        sub_batch.where(self.table.expired == True).delete()  # noqa: E712


class SimulatedClock:
    """Real time plus the pauses not slept: what the job runner's stopwatch reads here."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def sleep(self, seconds: float) -> None:
        self.skipped += seconds

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped


class _TimeWithClock:
    """The ``time`` module as :mod:`dramatiq_bbo.jobs.run` sees it, ``monotonic`` simulated."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.monotonic = clock.monotonic

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def simulated_pauses(clock: SimulatedClock) -> Iterator[None]:
    """Pauses between sub-batches advance ``clock`` instead of sleeping, and the job
    runner's duration reads it (so the optimizer sees the pauses as taken)."""
    defaults = SubBatchEngine.__init__.__kwdefaults__
    assert defaults is not None and "sleep" in defaults
    saved_sleep, saved_time = defaults["sleep"], job_run.time
    defaults["sleep"] = clock.sleep
    job_run.time = _TimeWithClock(clock)  # type: ignore[assignment]
    try:
        yield
    finally:
        defaults["sleep"], job_run.time = saved_sleep, saved_time


@dataclass
class Run:
    """One operation on the simulated clock: its jobs' sizes and durations, when it ended."""

    interval: float
    sizes: list[int] = field(default_factory=list)  # each job's batch size
    rows: list[int] = field(default_factory=list)  # the rows it walked (fewer for the last)
    durations: list[float] = field(default_factory=list)
    finished_at: float = 0.0  # simulated seconds after enqueue

    @property
    def longest_share(self) -> float:
        return max(self.durations) / self.interval

    def describe(self) -> str:
        jobs = ", ".join(
            f"{s:,} asked, {n:,} rows, {d:.1f} s"
            for s, n, d in zip(self.sizes, self.rows, self.durations, strict=True)
        )
        return f"{len(self.sizes)} jobs ({jobs}), finished at {self.finished_at:.0f} s"


def run_simulated(operation_id: Any, clock: SimulatedClock) -> Run:
    """Run the operation job by job as the pipeline would, on ``clock``; its :class:`Run`."""
    name = DEFAULT_DATABASE
    with REGISTRY.connection(name) as conn:
        operation = _activate(conn, operation_id)
        token = f"bench-defaults:{uuid.uuid4().hex}"
        take_stage(name, operation, token)
        lease = HEARTBEAT.hold(name, operation, stage_token=token)
        try:
            return _jobs(conn, operation, clock)
        finally:
            HEARTBEAT.release(lease)
            release_stage(name, operation, token)


def _jobs(conn: psycopg.Connection[Any], operation: OperationRecord, clock: SimulatedClock) -> Run:
    name, run, start = DEFAULT_DATABASE, Run(float(operation.interval_seconds)), 0.0
    budget = run.interval * float(REGISTRY.settings.job_budget_fraction)
    while True:
        current = fetch_operation(conn, operation.id)
        assert current is not None
        if current.status != OperationStatus.ACTIVE:
            return run
        began = clock.monotonic()

        def over_budget(began: float = began) -> str | None:
            return "time_budget" if clock.monotonic() - began >= budget else None

        check = status_stop_check(name, current, over_budget)
        skipped = clock.skipped
        outcome = job_run.run_next_job(conn, current, stop_check=check, database=name)
        _check_clock(outcome, clock.skipped - skipped)
        if outcome is None:  # nothing left to cut: the orchestrator finishes it when due
            end_operation(name, current, int(REGISTRY.settings.max_attempts))
            run.finished_at = start
            return run
        chain(name, current.id, outcome, time.monotonic())  # sends nothing: the lease is ours
        run.sizes.append(outcome.job.batch_size)
        run.rows.append(outcome.rows)
        run.durations.append(outcome.duration)
        run.finished_at = start + outcome.duration
        start += max(run.interval, outcome.duration)


def _check_clock(outcome: JobOutcome | None, skipped: float) -> None:
    """Fail loudly if the job runner stopped reading the simulated clock (the figures would
    then be the work without its pauses) or the engine stopped taking its sleep from it."""
    if outcome is None or outcome.rows <= outcome.job.sub_batch_size:
        return
    assert skipped > 0, "the sub-batch engine no longer sleeps through SubBatchEngine's `sleep`"
    assert outcome.duration >= skipped, (
        f"job {outcome.job.id} lasted {outcome.duration:.3f} s with {skipped:.1f} s of pauses:"
        " dramatiq_bbo.jobs.run no longer times jobs with time.monotonic (simulated_pauses)"
    )


def _activate(conn: psycopg.Connection[Any], operation_id: Any) -> OperationRecord:
    """queued → active, as the first job of an operation does."""
    operations, _ = tables_for(operation_id)
    conn.execute(query("execution_activate_operation", operations=operations), {"id": operation_id})
    found = fetch_operation(conn, operation_id)
    assert found is not None and found.status == OperationStatus.ACTIVE, found
    return found


# -- the scenarios ----------------------------------------------------------------------------


def todos(dsn: str, users_rows: int, clock: SimulatedClock) -> tuple[Run, int]:
    """The user's done todos: ``users_rows`` of the user's (a quarter done) among twice as
    many; the run, and the done todos left (0)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE todos (id bigint PRIMARY KEY, user_id int NOT NULL, done bool NOT NULL,"
            " title text NOT NULL DEFAULT 'a todo')"
        )
        conn.execute(
            "INSERT INTO todos (id, user_id, done) SELECT i, CASE WHEN i %% 2 = 0 THEN 1"
            " ELSE 2 + i %% 50 END, i %% 8 = 0 FROM generate_series(1, %s) i",
            [2 * users_rows],
        )
        conn.execute("CREATE INDEX todos_user_id ON todos (user_id, id)")
        conn.execute("VACUUM ANALYZE todos")
    operation = bbo.enqueue(DeleteDoneTodos, "todos", "id", arguments={"user_id": 1}).operation
    run = run_simulated(operation.id, clock)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM todos WHERE user_id = 1 AND done").fetchone()
    return run, int(row[0]) if row else -1


def purge(dsn: str, rows: int, clock: SimulatedClock) -> tuple[Run, Run, int, int]:
    """The hourly purge fired twice: both runs, the size learned after the first, and the
    second firing's first batch size."""
    expired = rows * 3 // 20
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, expired bool NOT NULL,"
            " payload text NOT NULL DEFAULT 'an event')"
        )
        conn.execute(
            "INSERT INTO events (id, expired) SELECT i, i %% 20 < 3 FROM generate_series(1, %s) i",
            [rows],
        )
        conn.execute("VACUUM ANALYZE events")
    first = run_simulated(bbo.enqueue(PurgeExpired, "events", "id").operation.id, clock)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(  # an hour later: new events, and as many old ones expired
            "INSERT INTO events (id, expired) SELECT i, false FROM generate_series(%s, %s) i",
            [rows + 1, rows + expired],
        )
        conn.execute(
            "UPDATE events SET expired = true WHERE id <= %s AND id %% 20 BETWEEN 3 AND 5", [rows]
        )
        conn.execute("VACUUM ANALYZE events")
        row = conn.execute(
            "SELECT batch_size FROM bbo.learned_batch_sizes WHERE job_class_name = %s",
            [PurgeExpired.name],
        ).fetchone()
    learned = int(row[0]) if row else 0
    second_operation = bbo.enqueue(PurgeExpired, "events", "id").operation
    second = run_simulated(second_operation.id, clock)
    return first, second, learned, second_operation.batch_size


def section(ctx: Context) -> list[Row]:
    users_rows, purge_rows = 62_000, 200_000  # --quick too: the goals are set at these sizes
    clock = SimulatedClock()
    with bench_database(ctx, "bbo_bench_defaults", broker=False) as dsn, simulated_pauses(clock):
        todo_run, left = todos(dsn, users_rows, clock)
        first, second, learned, started_at = purge(dsn, purge_rows, clock)
    for label, run in (("todos", todo_run), ("purge 1", first), ("purge 2", second)):
        progress(f"  defaults: {label}: {run.describe()}")
    done = users_rows // 4
    todo = f"delete one user's {done:,} done todos ({users_rows:,} in scope, of {2 * users_rows:,})"
    hourly = f"hourly purge of {purge_rows * 3 // 20:,} of {purge_rows:,} rows"
    rows = [
        *_rows(f"{todo}, done todos left {left}", todo_run, "≤ 300 s"),
        *_rows(f"{hourly}, first firing", first, ""),
        *_rows(f"{hourly}, second firing", second, "≤ 600 s"),
        Row(SECTION, f"{hourly}: second firing's first job ÷ the size the first one learned",
            started_at, "rows", learned, "learned size", started_at / learned if learned else None,
            "= 1"),
    ]  # fmt: skip
    return rows


def _rows(label: str, run: Run, goal: str) -> list[Row]:
    work = sum(run.durations)
    rows = ", ".join(f"{n:,}" for n in run.rows)
    return [
        Row(SECTION, f"{label}: simulated time to finish ({len(run.rows)} jobs of {rows} rows)",
            run.finished_at, "s", work, "its jobs back to back", run.finished_at / work, goal),
        Row(SECTION, f"{label}: longest job ÷ interval ({run.interval:g} s)",
            run.longest_share, "", goal=f"≤ {CEILING}"),
    ]  # fmt: skip
