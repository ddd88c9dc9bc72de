"""A runner frozen (SIGSTOP) in the middle of a sub-batch for longer than its lease: the
scheduler keeps serving every other operation meanwhile, the frozen job is taken over by
another worker once its lease expired (from its last committed checkpoint), and when the frozen
process is resumed it finds it lost the lease and applies nothing: every row visited once.

A frozen process keeps its sub-batch's transaction open with its row locks; the server ends
that session after ``sub_batch_idle_timeout_seconds`` (before the lease expires), so the
takeover does not wait on those locks. Short settings keep the test short: a 4 s lease, 1.5 s
idle timeout, a scheduler pass every 0.5 s in each worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers, dramatiq_workers
from tests.faults.liveness_support import (
    group_of,
    job_row,
    pipeline,
    running_in,
)
from tests.helpers import operation_row, wait_until, without_broker

__all__ = ["dramatiq_workers", "pipeline"]

SETTINGS = {
    "lease_seconds": 4.0,
    "sub_batch_idle_timeout_seconds": 1.5,
    "scheduler_pass_seconds": 0.5,
}
VICTIM_ROWS, OTHER_ROWS, OTHERS = 6_000, 1_000, 3


@contextmanager
def ticking(durations: list[float], errors: list[BaseException]) -> Iterator[None]:
    """Scheduler passes from this process every 0.2 s (as periodiq would, more often)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.2):
            started = time.monotonic()
            try:
                scheduler.tick("main")
            except BaseException as exc:
                errors.append(exc)
            durations.append(time.monotonic() - started)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def finished(conn: psycopg.Connection[Any], operation_id: Any) -> bool:
    return bool(operation_row(conn, operation_id)["status"] == OperationStatus.FINISHED)


def visits(conn: psycopg.Connection[Any], table: str) -> dict[int, int]:
    return dict(conn.execute(f"SELECT visits, count(*) FROM {table} GROUP BY 1").fetchall())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_runner_frozen_past_its_lease_is_taken_over_and_applies_nothing_when_resumed(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    make_counter_table(conn, "victim", VICTIM_ROWS)
    for i in range(OTHERS):
        make_counter_table(conn, f"other{i}", OTHER_ROWS)
    pipeline(**SETTINGS)
    groups = [dramatiq_workers(processes=1, threads=2, settings=SETTINGS) for _ in range(2)]
    victim_id = bbo.enqueue(
        PipelineVisit,
        "victim",
        "id",
        arguments={"sleep_ms": 100},  # most of a sub-batch's time is inside its transaction
        batch_size=VICTIM_ROWS,
        sub_batch_size=100,
    ).operation.id
    wait_until(lambda: operation_row(conn, victim_id)["processed_tuple_count"] >= 300, timeout=60)
    job, pid = running_in(conn, victim_id)
    frozen = group_of(pid, groups)

    os.kill(pid, signal.SIGSTOP)
    try:
        durations: list[float] = []
        errors: list[BaseException] = []
        with ticking(durations, errors):
            with without_broker():  # no wake-up: only a scheduler pass can start these
                others = [
                    bbo.enqueue(PipelineVisit, f"other{i}", "id").operation.id
                    for i in range(OTHERS)
                ]
            for operation_id in others:
                wait_until(lambda o=operation_id: finished(conn, o), timeout=60, interval=0.1)
            wait_until(lambda: finished(conn, victim_id), timeout=90, interval=0.1)
        assert not errors, errors
        assert max(durations) < 5.0, f"a scheduler pass took {max(durations):.1f} s"
        taken_over = job_row(conn, job["id"])
        assert taken_over["interruptions"] >= 1 and taken_over["attempts"] == 1, taken_over
    finally:
        os.kill(pid, signal.SIGCONT)

    # Resumed, the frozen runner finds its job taken over and stops without applying anything.
    wait_until(
        lambda: (
            "taken over by another runner" in frozen.log_text()
            or "held by another runner now" in frozen.log_text()
        ),
        timeout=60,
        interval=0.1,
    )
    frozen.stop()
    assert visits(conn, "victim") == {1: VICTIM_ROWS}
    for i in range(OTHERS):
        assert visits(conn, f"other{i}") == {1: OTHER_ROWS}
    assert operation_row(conn, victim_id)["processed_tuple_count"] == VICTIM_ROWS
