"""The heartbeat keeps a running job's lease alive through a sub-batch longer than the lease, so
scheduler passes meanwhile leave it alone: no takeover, no interruption, one attempt."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.jobs.run import run_next_job
from dramatiq_bbo.pipeline import scheduler
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.helpers import job_rows, wait_until, without_broker


def test_a_sub_batch_longer_than_the_lease_keeps_its_lease_by_heartbeat(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    with without_broker():
        bbo.configure(dsn=configured, lease_seconds=1.0)
        make_counter_table(conn, "slow", 20)
        operation = bbo.enqueue(
            PipelineVisit,
            "slow",
            "id",
            arguments={"sleep_ms": 2_500},  # one sub-batch, 2.5 leases long
            batch_size=20,
            sub_batch_size=20,
        ).operation
        outcome: list[Any] = []
        with REGISTRY.connection("main") as bookkeeping:
            runner = threading.Thread(
                target=lambda: outcome.append(run_next_job(bookkeeping, operation))
            )
            runner.start()
            wait_until(lambda: job_rows(conn, operation.id), timeout=10, interval=0.01)
            recovered, beats = 0, set()
            while runner.is_alive():
                recovered += scheduler.tick("main").recovered
                (job,) = job_rows(conn, operation.id)
                if job["status"] == 1:
                    beats.add(job["heartbeat_at"])
                time.sleep(0.1)
            runner.join()

    assert recovered == 0
    assert len(beats) >= 3, beats  # the claim, then at least two heartbeats
    (job,) = job_rows(conn, operation.id)
    assert (job["status"], job["attempts"], job["interruptions"]) == (3, 1, 0)
    assert outcome and outcome[0].job.processed_tuple_count == 20
    assert dict(conn.execute("SELECT visits, count(*) FROM slow GROUP BY 1").fetchall()) == {1: 20}
