"""Operations run by themselves on real ``dramatiq`` worker processes.

Every test starts ``python -m dramatiq tests.acceptance.pipeline_app`` (see
:mod:`tests.acceptance.workers`) on its own database, which also holds the broker's queue, so
the stages hand off through the transactional outbox. The test process plays the web
process: it configures bbo, builds its broker and calls ``setup(broker)`` (so ``enqueue`` wakes
the operation at once), then enqueues.

The scheduler's periodic tick: in production periodiq fires ``bbo_scheduler_tick`` every
minute. No periodiq process runs here; where a test needs the tick (recovery after a kill,
racing schedulers) it calls :func:`dramatiq_bbo.pipeline.scheduler.tick` itself, from
:class:`Ticker` threads, far more often than once a minute. Tests that do not tick prove that
the hand-offs alone (enqueue's wake-up, the runner's chained orchestrator message) carry the
operation to its end.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo.jobs import ending
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.acceptance.pipeline_operations import (
    RUNS_TABLE_DDL,
    VISIT_STYLES,
    PipelineDelete,
    PipelineVisit,
    RecordedVisit,
    make_counter_table,
)
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import committed_rows, wait_until
from tests.helpers import job_rows as jobs
from tests.helpers import operation_row as operation


# -- the test process as an application ---------------------------------------------------
@pytest.fixture
def pipeline(dsn: str) -> Iterator[Callable[..., None]]:
    """``pipeline(**settings)``: configure bbo in this process with ``settings`` (give the
    workers the same ones) and set the pipeline up on a broker of this test's database."""
    brokers: list[PostgresBroker] = []

    def start(**settings: Any) -> None:
        bbo.configure(dsn=dsn, **settings)
        # As a web process builds it: dramatiq's default middleware. Its psycopg2 pool opens
        # nothing here (the outbox writes the messages on our own connections).
        broker = PostgresBroker(url=dsn, results=False)
        brokers.append(broker)
        bbo.setup(broker)

    yield start
    for broker in brokers:
        broker.close()
    bbo.reset()


class Ticker:
    """``threads`` threads calling ``scheduler.tick()`` every ``period`` seconds until exit,
    like that many periodiq schedulers firing far more often than every minute."""

    def __init__(self, *, threads: int = 1, period: float = 0.2) -> None:
        self.period = period
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.ticks = 0
        self.threads = [
            threading.Thread(target=self._loop, name=f"ticker-{i}", daemon=True)
            for i in range(threads)
        ]

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                scheduler.tick("main")
                self.ticks += 1
            except BaseException as exc:  # surfaced at exit
                self.errors.append(exc)
                return
            self.stop.wait(self.period)

    def __enter__(self) -> Ticker:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.errors:
            raise self.errors[0]


# -- reading state -------------------------------------------------------------------------


def running_jobs(conn: psycopg.Connection[Any], operation_id: Any) -> list[dict[str, Any]]:
    return [j for j in jobs(conn, operation_id) if j["status"] == JobStatus.RUNNING]


def processed(conn: psycopg.Connection[Any], operation_id: Any) -> int:
    return committed_rows(conn, operation_id)


def status(conn: psycopg.Connection[Any], operation_id: Any) -> OperationStatus:
    return OperationStatus(operation(conn, operation_id)["status"])


def ended(conn: psycopg.Connection[Any], operation_id: Any) -> Callable[[], bool]:
    def check() -> bool:
        return status(conn, operation_id) not in OperationStatus.UNFINISHED

    return check


def visits(conn: psycopg.Connection[Any], table: str) -> dict[int, int]:
    return dict(conn.execute(f"SELECT visits, count(*) FROM {table} GROUP BY visits").fetchall())


def assert_finished(conn: psycopg.Connection[Any], operation_id: Any, rows: int) -> None:
    record = operation(conn, operation_id)
    assert OperationStatus(record["status"]) == OperationStatus.FINISHED, record
    assert record["processed_tuple_count"] == rows
    assert {JobStatus(j["status"]) for j in jobs(conn, operation_id)} == {JobStatus.SUCCEEDED}


def assert_disjoint_ranges(job_rows: list[dict[str, Any]]) -> None:
    """Job ranges of one operation never overlap."""
    ordered = sorted(job_rows, key=lambda j: j["min_cursor"])
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert before["min_cursor"] <= before["max_cursor"] < after["min_cursor"], (before, after)


def assert_sequential(intervals: list[tuple[Any, Any]], what: str) -> None:
    """Intervals ``(start, end)`` never overlap."""
    ordered = sorted(intervals)
    for (start, end), (next_start, _) in zip(ordered, ordered[1:], strict=False):
        assert end is not None and start <= end <= next_start, f"{what}: {ordered}"


def watch_unchanged(read: Callable[[], Any], seconds: float) -> Any:
    """Read ``read()`` repeatedly for ``seconds``; it must not change. Its value."""
    first = read()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert read() == first
        time.sleep(0.05)
    return first


# -- the checks ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_200k_row_delete_finishes_on_dramatiq_workers_and_starts_within_a_second(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    rows = 200_000
    make_counter_table(conn, "doomed", rows)
    pipeline()
    dramatiq_workers(processes=1, threads=4)

    started = time.monotonic()
    result = bbo.enqueue(PipelineDelete, "doomed", "id")
    enqueued = time.monotonic()
    operation_id = result.operation.id
    # Polled on a tight loop: the measure is an upper bound of enqueue → first commit.
    wait_until(lambda: processed(conn, operation_id) > 0, timeout=10, interval=0.002)
    first_commit = time.monotonic() - enqueued

    wait_until(ended(conn, operation_id), timeout=150, interval=0.1)
    total = time.monotonic() - started

    print(f"first sub-batch committed {first_commit * 1000:.0f} ms after enqueue returned")
    print(f"{rows} rows deleted in {total:.1f} s ({rows / total:.0f} rows/s)")
    assert conn.execute("SELECT count(*) FROM doomed").fetchone() == (0,)
    assert_finished(conn, operation_id, rows)
    assert operation(conn, operation_id)["affected_tuple_count"] == rows
    assert_disjoint_ranges(jobs(conn, operation_id))
    assert first_commit < 1.0, f"first sub-batch committed {first_commit:.3f} s after enqueue"


def job_cursors(conn: psycopg.Connection[Any], operation_id: Any) -> list[tuple[Any, Any, Any]]:
    """Each job's (min, max, checkpoint) cursors, in range order."""
    return sorted(
        (j["min_cursor"], j["max_cursor"], j["checkpoint_cursor"]) for j in jobs(conn, operation_id)
    )


@pytest.mark.slow
@pytest.mark.parametrize("style", sorted(VISIT_STYLES))
def test_kill_9_of_the_worker_mid_job_then_a_new_worker_visits_every_row_once(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
    style: str,
) -> None:
    """Written with perform() or with process(), the same checkpoints and one visit per row."""
    rows, lease, batch = 20_000, 3, 4_000
    make_counter_table(conn, "counters", rows)
    pipeline(lease_seconds=lease)
    first = dramatiq_workers(processes=1, threads=2, settings={"lease_seconds": lease})

    result = bbo.enqueue(
        VISIT_STYLES[style],
        "counters",
        "id",
        arguments={"sleep_ms": 20},  # each sub-batch sleeps inside its transaction
        batch_size=batch,
        sub_batch_size=100,
        # job sizes pinned, so that the job ranges are the same whatever the optimizer measures
        min_batch_size=batch,
        max_batch_size=batch,
    )
    operation_id = result.operation.id
    # Mid-job: sub-batches of the first job committed, and it is still running.
    wait_until(
        lambda: 1_000 <= processed(conn, operation_id) < 3_000 and running_jobs(conn, operation_id),
        timeout=30,
        interval=0.01,
    )
    killed = first.kill_workers()
    first.wait_exit(timeout=30)  # the master shuts down once its worker died
    assert killed

    (abandoned,) = running_jobs(conn, operation_id)  # left running under a lease
    committed = processed(conn, operation_id)
    assert visits(conn, "counters") == {1: committed, 0: rows - committed}
    # ids 1..rows: the committed sub-batches are the rows 1..committed, and the abandoned
    # job's checkpoint is the last of them (none if it had committed nothing yet)
    assert conn.execute("SELECT max(id) FROM counters WHERE visits = 1").fetchone() == (committed,)
    started = committed >= abandoned["min_cursor"][0]
    assert abandoned["checkpoint_cursor"] == ([committed] if started else None)

    dramatiq_workers(processes=1, threads=2, settings={"lease_seconds": lease})
    with Ticker():  # recovers the abandoned job once its lease expired
        wait_until(ended(conn, operation_id), timeout=90, interval=0.1)

    assert visits(conn, "counters") == {1: rows}
    assert_finished(conn, operation_id, rows)
    assert job_cursors(conn, operation_id) == [
        ([low], [low + batch - 1], [low + batch - 1]) for low in range(1, rows + 1, batch)
    ]
    resumed = {j["id"]: j for j in jobs(conn, operation_id)}[abandoned["id"]]
    # the killed run is an interruption, not a failed attempt; its checkpoint was kept
    assert (resumed["attempts"], resumed["interruptions"]) == (1, 1)
    assert_disjoint_ranges(jobs(conn, operation_id))


@pytest.mark.slow
def test_two_workers_and_two_schedulers_never_overlap_ranges_nor_run_an_operation_twice(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    tables, rows, max_running = 20, 1_500, 6
    conn.execute(RUNS_TABLE_DDL)
    for i in range(tables):
        make_counter_table(conn, f"t{i:02d}", rows)
    settings = {"max_running_jobs": max_running}
    pipeline(**settings)
    dramatiq_workers(processes=2, threads=4, settings=settings)

    with Ticker(threads=2, period=0.05):
        ids = [
            bbo.enqueue(
                RecordedVisit,
                f"t{i:02d}",
                "id",
                batch_size=150,
                sub_batch_size=50,
                min_batch_size=100,
                max_batch_size=300,
            ).operation.id
            for i in range(tables)
        ]
        for operation_id in ids:
            wait_until(ended(conn, operation_id), timeout=120, interval=0.1)

    for i, operation_id in enumerate(ids):
        assert visits(conn, f"t{i:02d}") == {1: rows}, f"table t{i:02d}"
        assert_finished(conn, operation_id, rows)
        job_rows = jobs(conn, operation_id)
        assert_disjoint_ranges(job_rows)
        assert_sequential(
            [(j["started_at"], j["finished_at"]) for j in job_rows], f"jobs of {operation_id}"
        )
        runs = conn.execute(
            "SELECT started_at, ended_at FROM pipeline_runs WHERE operation_id = %s",
            [str(operation_id)],
        ).fetchall()
        assert len(runs) == len(job_rows)  # one run per job: none ran twice
        assert_sequential(runs, f"runs of {operation_id}")

    # Both worker processes took part, and never more than max_running_jobs ran at once
    # (orchestrators and schedulers count jobs in flight under one advisory lock). A
    # recorded run lies inside its job's in-flight time, so this is a lower bound.
    pids = {pid for (pid,) in conn.execute("SELECT DISTINCT pid FROM pipeline_runs").fetchall()}
    assert len(pids) == 2
    (most,) = conn.execute(
        "SELECT max(n) FROM (SELECT sum(delta) OVER (ORDER BY at, delta) AS n FROM ("
        " SELECT started_at AS at, 1 AS delta FROM pipeline_runs"
        " UNION ALL SELECT ended_at, -1 FROM pipeline_runs) e) c"
    ).fetchone()
    print(f"at most {most} jobs ran at once (max_running_jobs={max_running})")
    assert most <= max_running


@pytest.mark.slow
def test_pause_resume_and_cancel_take_effect_at_the_next_sub_batch_on_workers(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    rows, sub_batch, sleep_ms = 10_000, 100, 25
    # The runner re-reads the status at a sub-batch boundary at most every
    # ending.STATUS_CHECK_SECONDS: after pause() returns, the sub-batch in progress commits,
    # plus at most those that fit in that time (each takes >= sleep_ms), plus one of slack.
    status_every_ms = ending.STATUS_CHECK_SECONDS * 1000
    after_stop_bound = sub_batch * (2 + math.ceil(status_every_ms / sleep_ms))
    make_counter_table(conn, "paused", rows)
    make_counter_table(conn, "cancelled", rows)
    pipeline()
    dramatiq_workers(processes=1, threads=4)

    def start(table: str) -> Any:
        operation_id = bbo.enqueue(
            PipelineVisit,
            table,
            "id",
            arguments={"sleep_ms": sleep_ms},
            batch_size=2_000,
            sub_batch_size=sub_batch,
        ).operation.id
        wait_until(lambda: processed(conn, operation_id) >= 300, timeout=30, interval=0.01)
        return operation_id

    def stopped(operation_id: Any, table: str) -> int:
        """No job left running within a deadline, then nothing moves for a while."""
        wait_until(lambda: not running_jobs(conn, operation_id), timeout=10, interval=0.02)
        count = watch_unchanged(
            lambda: (processed(conn, operation_id), len(jobs(conn, operation_id))), seconds=2.0
        )[0]
        assert visits(conn, table) == {1: count, 0: rows - count}  # each committed once
        return int(count)

    with Ticker():  # a scheduler must not revive a paused or cancelled operation either
        paused_id = start("paused")
        before_pause = processed(conn, paused_id)
        assert bbo.pause(paused_id).status == OperationStatus.PAUSED
        at_pause = stopped(paused_id, "paused")
        assert 0 < at_pause < rows
        print(f"rows committed after pause(): {at_pause - before_pause}")
        assert at_pause - before_pause <= after_stop_bound
        assert status(conn, paused_id) == OperationStatus.PAUSED

        bbo.resume(paused_id)
        wait_until(ended(conn, paused_id), timeout=60, interval=0.05)
        assert visits(conn, "paused") == {1: rows}
        assert_finished(conn, paused_id, rows)

        cancelled_id = start("cancelled")
        before_cancel = processed(conn, cancelled_id)
        assert bbo.cancel(cancelled_id).status == OperationStatus.CANCELLED
        at_cancel = stopped(cancelled_id, "cancelled")
        assert 0 < at_cancel < rows
        print(f"rows committed after cancel(): {at_cancel - before_cancel}")
        assert at_cancel - before_cancel <= after_stop_bound
        assert status(conn, cancelled_id) == OperationStatus.CANCELLED


@pytest.mark.slow
def test_a_graceful_worker_shutdown_mid_job_is_not_a_failed_attempt(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    rows = 10_000
    make_counter_table(conn, "graceful", rows)
    pipeline()
    first = dramatiq_workers(processes=1, threads=2)
    operation_id = bbo.enqueue(
        PipelineVisit,
        "graceful",
        "id",
        arguments={"sleep_ms": 25},
        batch_size=5_000,
        sub_batch_size=100,
    ).operation.id
    wait_until(
        lambda: processed(conn, operation_id) >= 500 and running_jobs(conn, operation_id),
        timeout=30,
        interval=0.01,
    )
    (job,) = running_jobs(conn, operation_id)
    assert job["attempts"] == 1

    first.signal_master(signal.SIGTERM)
    assert first.wait_exit(timeout=40) == 0

    interrupted = {j["id"]: j for j in jobs(conn, operation_id)}[job["id"]]
    assert JobStatus(interrupted["status"]) == JobStatus.PENDING
    assert interrupted["attempts"] == 0  # given back: the shutdown was not an attempt
    assert interrupted["metrics"].get("interrupted_reason") == "worker_shutdown"
    assert interrupted["processed_tuple_count"] > 0  # its checkpoint stays
    assert status(conn, operation_id) == OperationStatus.ACTIVE

    # No tick: the next stage's message, written when the job stopped, carries it on.
    dramatiq_workers(processes=1, threads=2)
    wait_until(ended(conn, operation_id), timeout=60, interval=0.05)

    assert visits(conn, "graceful") == {1: rows}
    assert_finished(conn, operation_id, rows)
    final = {j["id"]: j for j in jobs(conn, operation_id)}
    assert final[job["id"]]["attempts"] == 1
    assert {j["attempts"] for j in final.values()} == {1}


@pytest.mark.slow
def test_an_interval_delays_the_next_job_through_the_broker_delay_queue(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    """interval > 0: the runner chains the next orchestrator as a *delayed* message, which
    dramatiq-pg parks on ``background_operations.DQ``; the worker consumes that delay queue
    (``--queues background_operations`` covers it) and releases it at its eta. No tick."""
    rows, interval = 3_000, 1.0
    make_counter_table(conn, "spaced", rows)
    pipeline()
    dramatiq_workers(processes=1, threads=2)

    operation_id = bbo.enqueue(
        PipelineVisit, "spaced", "id", interval_seconds=interval, batch_size=1_000
    ).operation.id
    wait_until(ended(conn, operation_id), timeout=30, interval=0.05)

    assert visits(conn, "spaced") == {1: rows}
    assert_finished(conn, operation_id, rows)
    starts = sorted(j["started_at"] for j in jobs(conn, operation_id))
    assert len(starts) >= 2
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    print(f"gaps between job starts with interval {interval} s: {gaps}")
    # due one interval after the previous job started (minus that job's claim, a few ms);
    # released by the delay-queue consumer, which looks at its etas about once a second
    assert all(interval - 0.1 <= gap < interval + 3.0 for gap in gaps), gaps
