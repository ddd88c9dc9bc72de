"""Driving the pipeline's stages in the test thread, without a broker or a worker process.

``drive()`` plays the messages the stages would send each other: it calls the orchestrator
with the operation's current stage lease (the token its message would carry), finds the job
the orchestrator dispatched, and calls the runner on it — exactly what
``bbo_orchestrator``/``bbo_runner`` do in a worker. With no ``setup(broker)`` in force (the
empty runtime: no broker, no middleware) the stages write no message, so nothing runs behind
the test's back, and the chained orchestrator's delay (the operation's interval) is not
waited for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.jobs.run import JobOutcome
from dramatiq_bbo.pipeline import runner
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.pipeline.runner import run
from dramatiq_bbo.pipeline.runtime import Runtime, installed
from dramatiq_bbo.state.records import OperationRecord
from dramatiq_bbo.state.store import tables_for


@pytest.fixture
def no_broker() -> Iterator[None]:
    """The empty runtime (no broker, no middleware) while the test runs, whatever ran before,
    and no worker shutdown under way (a dramatiq Worker stopped in this process sets it)."""
    assert not runner.shutting_down.is_set(), "an earlier test left the shutdown flag set"
    with installed(Runtime()):
        yield


def dispatched_job_id(operation: OperationRecord) -> Any:
    """The job the orchestrator just handed to a runner: pending under a live lease."""
    _, jobs = tables_for(operation)
    with REGISTRY.connection(operation.database_name) as conn:
        rows = conn.execute(
            f"SELECT id FROM {jobs.as_string(conn)} WHERE worker_id = %s AND status = 0"
            " AND lease_expires_at > now()",
            [operation.id],
        ).fetchall()
    assert len(rows) == 1, f"expected one dispatched job, found {rows}"
    return rows[0][0]


def run_one_job(operation_id: Any, *, database: str = "main") -> JobOutcome | None:
    """One orchestrator message then, if it dispatched a job, one runner message; the run,
    or None when the orchestrator ended the operation instead."""
    operation = bbo.get_operation(operation_id, database=database)
    decision = orchestrate(database, operation.id, operation.lease_owner)
    if decision == Decision.FINISHED:
        return None
    assert decision == Decision.DISPATCHED, f"the orchestrator refused: {decision}"
    outcome = run(database, operation.id, dispatched_job_id(operation))
    assert outcome is not None, "the runner skipped the job it was handed"
    return outcome


def drive(
    operation_id: Any, *, database: str = "main", max_jobs: int = 500
) -> tuple[OperationRecord, list[JobOutcome]]:
    """Orchestrate and run the operation's jobs until it ends; (its record, the runs)."""
    outcomes: list[JobOutcome] = []
    while len(outcomes) <= max_jobs:
        operation = bbo.get_operation(operation_id, database=database)
        if not operation.unfinished:
            return operation, outcomes
        outcome = run_one_job(operation.id, database=database)
        if outcome is not None:
            outcomes.append(outcome)
    raise AssertionError(f"operation {operation_id} still unfinished after {max_jobs} jobs")


def visits(conn: psycopg.Connection[Any], n: int) -> list[tuple[int, int]]:
    """(visits, rows with that many) of the n-th operation's table."""
    return conn.execute(  # type: ignore[return-value]
        f"SELECT visits, count(*) FROM rows_{n} GROUP BY visits ORDER BY visits"
    ).fetchall()
