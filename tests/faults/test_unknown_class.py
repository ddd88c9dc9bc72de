"""An operation of a class a worker cannot import is held with its reason, not failed, and
runs to its end once a worker that knows the class is there.

The worker processes run :mod:`tests.faults.fault_app`; the first one does not import
:mod:`tests.faults.fault_operations`, the second does. The hold is short here
(``unknown_class_hold_seconds``), so the operation is offered again twice a second. While
both workers run, every stage message that reaches the first one holds the operation again:
it still ends, only later.

The in-process test plays the other place a class is met: the runner, handed a job that a
worker knowing the class dispatched.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.logs import UNKNOWN_CLASS_HOLD
from dramatiq_bbo.operation import register, unregister
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.pipeline.runner import run
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.acceptance.pipeline_operations import make_counter_table
from tests.acceptance.workers import DramatiqWorkers, dramatiq_workers
from tests.faults.fault_operations import LateVisit
from tests.faults.worker_faults import app_process, ended, start_workers, visits
from tests.helpers import wait_until
from tests.integration.pipeline_support import dispatched_job_id, no_broker

__all__ = ["app_process", "dramatiq_workers", "no_broker"]  # fixtures, re-exported for pytest

ROWS = 3_000
REASON = f"class {LateVisit.name} is not importable in this worker"
SETTINGS = {"unknown_class_hold_seconds": 0.5, "lease_seconds": 5.0}
WITHOUT_CLASS = "tests.acceptance.pipeline_operations"
WITH_CLASS = "tests.acceptance.pipeline_operations,tests.faults.fault_operations"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_class_unknown_to_the_worker_shows_its_reason_and_runs_once_a_worker_knows_it(
    conn: psycopg.Connection[Any],
    app_process: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    make_counter_table(conn, "counters", ROWS)
    app_process(**SETTINGS)
    unaware = start_workers(dramatiq_workers, SETTINGS, operations=WITHOUT_CLASS)

    operation_id = bbo.enqueue(LateVisit, "counters", "id", batch_size=1_500).operation.id

    held = wait_until(lambda: bbo.get_operation(operation_id).hold_reason == REASON, timeout=30)
    assert held
    first = bbo.get_operation(operation_id)
    # enqueue (this process knows the class) dispatched the first job itself (one hop); the
    # unaware worker's runner gave it back untouched and held the operation
    assert first.status == OperationStatus.ACTIVE and first.on_hold_until is not None
    # held again and again (each hold ends after 0.5 s), never failed, one log line
    wait_until(
        lambda: (
            (bbo.get_operation(operation_id).on_hold_until or first.on_hold_until)
            > first.on_hold_until + datetime.timedelta(seconds=2)
        ),
        timeout=30,
    )
    assert bbo.get_operation(operation_id).status == OperationStatus.ACTIVE
    [job] = bbo.list_jobs(operation_id)
    assert (job.status, job.attempts, job.lease_owner) == (JobStatus.PENDING, 0, None)
    assert unaware.log_text().count(UNKNOWN_CLASS_HOLD) == 1
    assert "Retries exceeded" not in unaware.log_text()

    start_workers(dramatiq_workers, SETTINGS, operations=WITH_CLASS)  # the first one stays
    known_at = time.monotonic()
    wait_until(ended(conn, operation_id), timeout=120, interval=0.1)
    print(f"finished {time.monotonic() - known_at:.1f} s after a worker knowing the class started")

    done = bbo.get_operation(operation_id)
    assert done.status == OperationStatus.FINISHED
    assert done.hold_reason is None
    assert visits(conn, "counters") == {1: ROWS}
    jobs = bbo.list_jobs(operation_id)
    assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}
    assert {job.attempts for job in jobs} == {1}  # no attempt spent by the unaware worker
    assert unaware.log_text().count(UNKNOWN_CLASS_HOLD) == 1


def test_a_runner_that_cannot_import_the_class_gives_the_job_back_and_holds_the_operation(
    configured: str,
    conn: psycopg.Connection[Any],
    no_broker: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bbo.configure(dsn=configured, unknown_class_hold_seconds=0.3)
    make_counter_table(conn, "counters", 500)
    caplog.set_level(logging.INFO, logger="dramatiq_bbo")

    class Forgotten(bbo.BaseOperation):
        name = "faults.forgotten_visit"
        pause_ms = 0
        interval_seconds = 0

        def perform(self) -> None:
            for sub_batch in self.each_sub_batch():
                sub_batch.update(visits=self.table.visits + 1)

    try:
        operation = bbo.enqueue(Forgotten, "counters", "id", batch_size=500).operation
        assert orchestrate("main", operation.id) == Decision.DISPATCHED  # a worker knowing it
        job_id = dispatched_job_id(operation)
        unregister(Forgotten.name)  # the runner's worker does not know it

        assert run("main", operation.id, job_id) is None

        held = bbo.get_operation(operation.id)
        assert held.hold_reason == f"class {Forgotten.name} is not importable in this worker"
        assert held.lease_owner is None  # no broker here: the scheduler hands it out later
        (job,) = bbo.list_jobs(operation.id)
        assert (job.status, job.attempts, job.lease_owner) == (JobStatus.PENDING, 0, None)
        logged = [
            r for r in caplog.records if getattr(r, "bbo", {}).get("message") == UNKNOWN_CLASS_HOLD
        ]
        assert [r.levelno for r in logged] == [logging.WARNING]

        register(Forgotten)  # a worker that knows the class, once the hold is over
        wait_until(lambda: orchestrate("main", operation.id) == Decision.DISPATCHED, timeout=10)
        outcome = run("main", operation.id, dispatched_job_id(operation))
    finally:
        unregister(Forgotten.name)

    assert outcome is not None and outcome.status == JobStatus.SUCCEEDED
    assert bbo.get_operation(operation.id).hold_reason is None
    assert visits(conn, "counters") == {1: 500}
