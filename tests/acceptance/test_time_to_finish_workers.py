"""Time to finish on a real ``dramatiq`` worker at the default interval (120 s): an operation
ends with its last job — not one interval later, when a chained orchestrator message would
have found nothing left — and the next operation of its configuration starts from the batch
size the first one learned (the worker writes the lesson, this process's enqueue reads it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import job_rows, operation_row, wait_until

ROWS = 800  # one job at the default batch size (1,000)


def finished(conn: psycopg.Connection[Any], operation_id: Any) -> Callable[[], bool]:
    def check() -> bool:
        status = OperationStatus(operation_row(conn, operation_id)["status"])
        return status == OperationStatus.FINISHED

    return check


def test_an_operation_finishes_with_its_last_job_and_teaches_the_next_one(
    conn: psycopg.Connection[Any],
    web_process: None,
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    make_counter_table(conn, "todos", ROWS)
    dramatiq_workers(processes=1, threads=2)

    def enqueue(user: int) -> Any:
        return bbo.enqueue(
            PipelineVisit, "todos", "id", arguments={"user": user}, interval_seconds=120
        ).operation

    first = enqueue(1)
    assert first.batch_size == 1_000  # nothing learned yet
    wait_until(finished(conn, first.id), timeout=30, interval=0.05)  # not 120 s
    record = operation_row(conn, first.id)
    [job] = job_rows(conn, first.id)
    assert record["processed_tuple_count"] == ROWS
    assert 0 <= (record["finished_at"] - job["finished_at"]).total_seconds() < 2

    learned = record["batch_size"]  # the optimizer's size after that fast job
    assert learned > 1_000
    assert conn.execute("SELECT batch_size FROM bbo.learned_batch_sizes").fetchall() == [(learned,)]
    second = enqueue(2)
    assert second.batch_size == learned
    wait_until(finished(conn, second.id), timeout=30, interval=0.05)
    assert conn.execute("SELECT count(*) FROM todos WHERE visits = 2").fetchone() == (ROWS,)
