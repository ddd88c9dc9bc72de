"""A user middleware sees its hooks called in order on a real ``dramatiq`` worker.

The worker app installs the recorder with ``setup(broker, middleware=[...])``
(``BBO_APP_RECORD_HOOKS``, see :mod:`tests.acceptance.pipeline_app`); so does the test
process, which plays the web process that enqueues. Each call is a row of ``hook_calls``
with the pid that made it. The operation is enqueued before the worker starts, so
``after_enqueue`` (which runs after the commit, when a worker may already be at work) comes
first; the worker runs one thread, so its stages run one after the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from tests.acceptance.hook_recorder import HOOK_CALLS_DDL, HookRecorder
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import wait_until

ROWS, SUB_BATCH = 20, 5


@pytest.fixture
def web_process(dsn: str) -> Iterator[None]:
    """This process as a web process: bbo configured, ``setup`` with the recorder."""
    bbo.configure(dsn=dsn)
    broker = PostgresBroker(url=dsn, results=False)
    bbo.setup(broker, middleware=[HookRecorder()])
    yield
    broker.close()
    bbo.reset()


def calls(conn: psycopg.Connection[Any]) -> list[tuple[int, str, str | None]]:
    return conn.execute("SELECT pid, hook, detail FROM hook_calls ORDER BY id").fetchall()


def test_a_user_middleware_sees_its_hooks_in_order_on_a_real_worker(
    dsn: str,
    conn: psycopg.Connection[Any],
    dramatiq_workers: Callable[..., DramatiqWorkers],
    web_process: None,
) -> None:
    conn.execute(HOOK_CALLS_DDL)
    make_counter_table(conn, "visited", ROWS)
    operation = bbo.enqueue(
        PipelineVisit,
        "visited",
        "id",
        batch_size=ROWS,  # one job of four sub-batches
        min_batch_size=1,
        max_batch_size=ROWS,
        sub_batch_size=SUB_BATCH,
    ).operation
    workers = dramatiq_workers(processes=1, threads=1, extra_env={"BBO_APP_RECORD_HOOKS": "1"})
    finished = ("after_transition", "active->finished")
    wait_until(lambda: finished in [c[1:] for c in calls(conn)], timeout=60, interval=0.1)
    [worker] = workers.worker_pids()
    recorded = calls(conn)

    # enqueue started the operation itself (one hop): its transition, then after_enqueue, here
    assert recorded[:2] == [
        (os.getpid(), "after_transition", "queued->active"),
        (os.getpid(), "after_enqueue", str(operation.id)),
    ]
    assert {pid for pid, _, _ in recorded[2:]} == {worker}  # everything else: the worker
    hooks = [(hook, detail) for _, hook, detail in recorded[2:]]
    [job] = bbo.list_jobs(operation)
    gaps = [h for h in hooks if h[0] == "between_sub_batches"]
    assert 3 <= len(gaps) <= 4 and set(gaps) == {("between_sub_batches", str(job.id))}
    assert hooks == [
        ("before_job", str(operation.id)),  # asked by the runner before the job it was sent
        *gaps,
        ("after_job", "succeeded"),
        ("after_transition", "active->finished"),  # the runner ends it with its last job
    ]
    assert bbo.get_operation(operation.id).status == bbo.OperationStatus.FINISHED
