"""The kill switch on real ``dramatiq`` workers: ``bbo.disable(class)`` stops a running job
within one sub-batch — read from the committed checkpoints — and no scheduler pass revives it;
``bbo.enable(class)`` lets it carry on from its checkpoint to the end, every row once.

The runner re-reads the operation's status and the switch at a sub-batch boundary at most
every ``ending.STATUS_CHECK_SECONDS``; each sub-batch here takes longer than that, so the
switch is read at every boundary and the only sub-batch that may commit after ``disable()``
returns is the one in progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.jobs import ending
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import committed_rows, job_rows, operation_row, wait_until

ROWS, SUB_BATCH, SLEEP_MS = 2_000, 100, 150


def processed(conn: psycopg.Connection[Any], operation_id: Any) -> int:
    return committed_rows(conn, operation_id)


def running(conn: psycopg.Connection[Any], operation_id: Any) -> bool:
    return any(job["status"] == JobStatus.RUNNING for job in job_rows(conn, operation_id))


def ticking(stop: threading.Event) -> None:
    """A scheduler pass every 0.2 s, far more often than periodiq's minute."""
    while not stop.wait(0.2):
        scheduler.tick("main")


@pytest.mark.slow
def test_disable_stops_a_running_job_within_one_sub_batch_and_enable_resumes_it(
    dsn: str,
    conn: psycopg.Connection[Any],
    web_process: None,
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    assert SLEEP_MS / 1000 > ending.STATUS_CHECK_SECONDS  # the switch is read at every boundary
    make_counter_table(conn, "counters", ROWS)
    dramatiq_workers(processes=1, threads=2)
    operation_id = bbo.enqueue(
        PipelineVisit,
        "counters",
        "id",
        arguments={"sleep_ms": SLEEP_MS},
        batch_size=ROWS,
        sub_batch_size=SUB_BATCH,
    ).operation.id
    wait_until(lambda: processed(conn, operation_id) >= 3 * SUB_BATCH, timeout=30, interval=0.01)
    stop = threading.Event()
    ticker = threading.Thread(target=ticking, args=(stop,), daemon=True)
    ticker.start()
    try:
        bbo.disable(PipelineVisit.name, reason="acceptance", by="test")
        at_disable = processed(conn, operation_id)

        wait_until(lambda: not running(conn, operation_id), timeout=10, interval=0.02)
        stopped_at = processed(conn, operation_id)
        deadline = time.monotonic() + 1.5  # nothing moves while it is disabled, ticks or not
        while time.monotonic() < deadline:
            assert processed(conn, operation_id) == stopped_at
            time.sleep(0.05)
    finally:
        stop.set()
        ticker.join(timeout=10)

    print(f"rows committed after disable(): {stopped_at - at_disable}")
    assert stopped_at - at_disable <= SUB_BATCH  # the sub-batch in progress, no other
    assert stopped_at < ROWS
    assert operation_row(conn, operation_id)["status"] == OperationStatus.ACTIVE
    stopped_job = next(j for j in job_rows(conn, operation_id) if j["checkpoint_cursor"])
    assert stopped_job["status"] == JobStatus.PENDING  # given back, not failed
    assert stopped_job["metrics"]["interrupted_reason"] == ending.CLASS_DISABLED
    assert stopped_job["checkpoint_cursor"] == [stopped_at]

    bbo.enable(PipelineVisit.name, by="test")

    wait_until(
        lambda: operation_row(conn, operation_id)["status"] == OperationStatus.FINISHED,
        timeout=60,
        interval=0.05,
    )
    counts = dict(conn.execute("SELECT visits, count(*) FROM counters GROUP BY 1").fetchall())
    assert counts == {1: ROWS}  # from the checkpoint: nothing twice, nothing skipped
