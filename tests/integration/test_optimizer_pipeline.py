"""The optimizer through the pipeline: a job whose work takes time proportional to its batch
size makes the optimizer converge as specified (asserted from the job rows).

The operation sleeps ``SECONDS_PER_ROW`` per row of each sub-batch, so a job of ``n`` rows
takes about ``n × SECONDS_PER_ROW`` (plus the sub-batch transactions). The pipeline's runner
(called in the test thread, see ``pipeline_support``) runs the batch optimizer after each job
and writes the next batch size on the operation; the test only reads the job rows.

The promise (dramatiq_bbo/jobs/optimizer.py): with the optimum ``N* = 0.95 × interval ÷ time per
row`` within ~5.7× of the start size, every job from ``jobs_needed(start, N*)`` on (the 10th
at the latest) is sized to last within ±10% of the target ``0.95 × interval`` — its size
times the time per row the jobs measured. Measured durations add the machine's noise on
top, so of them the test asserts the median over the converged jobs. Here the
interval is 0.5 s (the chained delay is not waited for: the test runs job after job) and the
optimum ~220 rows: from 100 rows (2.2×, growth capped at ×1.2 per job) ``jobs_needed`` says
job 5; from 400 rows (the optimum below the start), job 2. The work is mostly sleep so that
the machine's load hardly changes a job's time per row (±25% noise on a job would move the
smoothed estimate, α 0.4, by 10% — no optimizer meets ±10% through that).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.jobs.optimizer import MAX_GROWTH, TARGET_EFFICIENCY, jobs_needed
from dramatiq_bbo.state.records import JobStatus
from tests.integration.pipeline_support import no_broker, run_one_job  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_broker")

INTERVAL = 0.5
SECONDS_PER_ROW = 0.002
START = 100
JOBS = 10


class SleepPerRow(bbo.BaseOperation):
    """Work proportional to the rows: a sleep per row, then a visit."""

    name = "optimizer_pipeline.sleep_per_row"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            time.sleep(SECONDS_PER_ROW * len(sub_batch))
            sub_batch.update(visits=self.table.visits + 1)


@pytest.fixture
def configured_db(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    bbo.configure(dsn=dsn)
    conn.execute("CREATE TABLE rows (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO rows (id) SELECT generate_series(1, 20000)")
    conn.execute("ANALYZE rows")
    yield conn
    bbo.reset()


@pytest.mark.parametrize("start", [START, 4 * START], ids=["grow", "shrink"])
def test_job_durations_converge_to_095_of_the_interval_within_10_jobs(
    configured_db: psycopg.Connection[Any], start: int
) -> None:
    operation = bbo.enqueue(
        SleepPerRow,
        "rows",
        "id",
        batch_size=start,
        sub_batch_size=40,
        interval_seconds=INTERVAL,
        min_batch_size=40,
        max_batch_size=100_000,
    ).operation

    for _ in range(JOBS):
        outcome = run_one_job(operation.id)
        assert outcome is not None and outcome.status == JobStatus.SUCCEEDED

    jobs = bbo.list_jobs(operation.id)
    assert len(jobs) == JOBS
    target = TARGET_EFFICIENCY * INTERVAL
    sizes = [job.batch_size for job in jobs]
    durations = [float(job.metrics["duration_seconds"]) for job in jobs]
    rows = [job.processed_tuple_count for job in jobs]
    table = "\n".join(
        f"job {i + 1:2}: batch {size:5}  rows {n:5}  {d:.3f}s  ({d / target:.0%} of target)"
        for i, (size, n, d) in enumerate(zip(sizes, rows, durations, strict=True))
    )

    assert sizes[0] == start and rows == sizes  # every job did its full batch
    for previous, size in zip(sizes, sizes[1:], strict=False):
        assert size <= round(previous * MAX_GROWTH), f"growth above ×1.2:\n{table}"
    # the time per row this run measured: the median over its jobs (robust to a job that a
    # busy machine slowed down), and the optimum it implies
    per_row = statistics.median(d / n for d, n in zip(durations, rows, strict=True))
    optimum = target / per_row
    assert optimum < start * 5.7, f"the test's premise does not hold:\n{table}"
    assert (optimum > start * 1.5) == (start == START), f"the premise does not hold:\n{table}"
    first = jobs_needed(start, round(optimum))
    assert first <= JOBS
    converged = range(first - 1, JOBS)
    # A job the machine slowed (its time per row 25% off the run's median) rightly moves the
    # smoothed estimate, and with it the sizes of the two jobs after it: the optimizer cannot
    # tell a hiccup from a change. Those sizes are excused, at most two of them, and never the
    # last job's, which must be back on target.
    per_row_of = [d / n for d, n in zip(durations, rows, strict=True)]
    hiccups = {i for i, value in enumerate(per_row_of) if abs(value / per_row - 1) > 0.25}
    excused = {i for i in converged if hiccups & {i - 1, i - 2}} - {JOBS - 1}
    assert len(excused) <= 2, f"too many jobs disturbed by the machine to judge:\n{table}"
    # The promise: from job `first` on, every job is sized to last within ±10% of the target
    # (its size × the true time per row)...
    for index in converged:
        if index in excused:
            continue
        expected = sizes[index] * per_row
        assert abs(expected - target) <= 0.10 * target, (
            f"job {index + 1} is sized for {expected:.3f}s, outside ±10% of {target:.3f}s "
            f"(converged from job {first}):\n{table}"
        )
    # ...and measured, those jobs did last that long: their median duration is within ±10%
    # (one job may be slowed by the machine; the optimizer cannot know it in advance)
    measured = statistics.median(durations[index] for index in converged)
    assert abs(measured - target) <= 0.10 * target, (
        f"the converged jobs' median duration {measured:.3f}s is outside ±10% of "
        f"{target:.3f}s:\n{table}"
    )
