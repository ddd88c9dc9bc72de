"""With the default settings (30 s lease, a scheduler pass every 5 s in each worker process), a
job whose worker dies or stops mid-job runs on again on another worker soon: within 60 s of a
``kill -9``, within 10 s of a graceful SIGTERM. Neither counts as a failed attempt; both count
as an interruption. No periodiq process and no tick from the test: the workers alone recover.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.settings import Settings
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers, dramatiq_workers
from tests.faults.liveness_support import (
    group_of,
    job_row,
    owner_pid,
    pipeline,
    running_in,
    unfinished_messages,
)
from tests.helpers import operation_row, wait_until

__all__ = ["dramatiq_workers", "pipeline"]

ROWS = 20_000


def test_the_defaults_are_a_30_s_lease_and_a_5_s_pass() -> None:
    defaults = Settings()
    assert defaults.lease_seconds == 30.0
    assert defaults.scheduler_pass_seconds == 5.0
    assert defaults.max_interruptions == 15


def start_mid_job(
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> tuple[Any, dict[str, Any], DramatiqWorkers, DramatiqWorkers]:
    """Two worker groups, one operation of one long job (sub-batches of 100 rows, 40 ms each
    inside their transaction) running on one of them: (operation id, job, its group, the
    other group)."""
    make_counter_table(conn, "counters", ROWS)
    pipeline()
    groups = [dramatiq_workers(processes=1, threads=2) for _ in range(2)]
    operation_id = bbo.enqueue(
        PipelineVisit,
        "counters",
        "id",
        arguments={"sleep_ms": 40},
        batch_size=ROWS,
        sub_batch_size=100,
    ).operation.id
    wait_until(
        lambda: operation_row(conn, operation_id)["processed_tuple_count"] >= 500, timeout=60
    )
    job, pid = running_in(conn, operation_id)
    group = group_of(pid, groups)
    other = groups[1] if group is groups[0] else groups[0]
    return operation_id, job, group, other


class CommittedBy:
    """True once a sub-batch of the job committed in ``group`` after that group took the job:
    the job runs there and its processed count moved past where it was when first seen so."""

    def __init__(self, conn: psycopg.Connection[Any], job_id: Any, group: DramatiqWorkers):
        self.conn, self.job_id, self.group = conn, job_id, group
        self.first_seen: dict[str, int] = {}

    def __call__(self) -> bool:
        job = job_row(self.conn, self.job_id)
        pid = owner_pid(job)
        if pid is None or pid not in self.group.worker_pids():
            return False
        seen = self.first_seen.setdefault(job["lease_owner"], job["processed_tuple_count"])
        return bool(job["processed_tuple_count"] > seen)


def finish_and_check(conn: psycopg.Connection[Any], operation_id: Any, job_id: Any) -> None:
    wait_until(
        lambda: operation_row(conn, operation_id)["status"] == OperationStatus.FINISHED,
        timeout=90,
        interval=0.1,
    )
    assert dict(conn.execute("SELECT visits, count(*) FROM counters GROUP BY 1").fetchall()) == {
        1: ROWS
    }
    job = job_row(conn, job_id)
    assert (job["attempts"], job["interruptions"]) == (1, 1), job
    # nothing left queued in the broker: every message reached a live worker
    wait_until(lambda: not unfinished_messages(conn, ("queued",)), timeout=20)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_mid_job_is_taken_over_by_another_worker_within_60_s(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    operation_id, job, victim, survivor = start_mid_job(conn, pipeline, dramatiq_workers)

    victim.kill_workers()
    killed_at = time.monotonic()
    wait_until(CommittedBy(conn, job["id"], survivor), timeout=75, interval=0.1)
    recovered = time.monotonic() - killed_at

    print(f"kill -9 mid-job: next sub-batch committed on the other worker after {recovered:.1f} s")
    assert recovered < 60, f"took {recovered:.1f} s"
    finish_and_check(conn, operation_id, job["id"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigterm_mid_job_hands_the_job_to_another_worker_within_10_s(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    operation_id, job, stopping, survivor = start_mid_job(conn, pipeline, dramatiq_workers)

    stopping.signal_master(signal.SIGTERM)
    signalled_at = time.monotonic()
    wait_until(CommittedBy(conn, job["id"], survivor), timeout=30, interval=0.05)
    handed_over = time.monotonic() - signalled_at
    assert stopping.wait_exit(timeout=40) == 0

    print(f"SIGTERM mid-job: next sub-batch committed elsewhere after {handed_over:.1f} s")
    assert handed_over < 10, f"took {handed_over:.1f} s"
    finish_and_check(conn, operation_id, job["id"])
    # the stopping worker left nothing behind, consumed or queued
    wait_until(lambda: not unfinished_messages(conn, ("queued", "consumed")), timeout=20)
