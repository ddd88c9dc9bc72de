"""The operations' Prometheus metrics, recorded by ``PrometheusMetrics`` from the hooks.

The stages run in the test thread under a runtime holding the middleware under test and no
broker; with no multi-process directory in this process the metrics live in
``prometheus_client``'s default registry, which the test reads. (The same metrics on a real
``dramatiq`` worker's exposition: tests/acceptance/test_logs_and_metrics.py.)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import prometheus_client
import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import health
from dramatiq_bbo.errors import SubBatchTimeout
from dramatiq_bbo.metrics import PrometheusMetrics, labels, lost_sub_batch
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.pipeline.runner import run
from dramatiq_bbo.pipeline.runtime import Runtime, installed
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.integration.pipeline_support import dispatched_job_id, drive, no_broker  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_broker")

ROWS, BATCH, SUB_BATCH = 40, 20, 5
INDICATOR = "metrics_test_pressure"
#: what the application's indicator answers
STOP: dict[str, bool] = {"now": False}


class Visit(bbo.BaseOperation):
    name = "metrics.visit"

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


class Failing(bbo.BaseOperation):
    name = "metrics.failing"

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            raise RuntimeError("boom")


def pressure(context: health.Context) -> Any:
    return (health.Signal.STOP, "queue latency above 2s") if STOP["now"] else health.Signal.NORMAL


@pytest.fixture
def items(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[str]:
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT generate_series(1, %s)", [ROWS])
    conn.execute("ANALYZE items")
    bbo.configure(dsn=dsn, health={"disabled_indicators": list(health.BUILTIN_INDICATORS)})
    STOP["now"] = False
    health.register(pressure, name=INDICATOR)
    health.clear_cache()
    with installed(Runtime(middleware=(*bbo.default_middleware(),))):
        yield "items"
    health.unregister(INDICATOR)
    health.clear_cache()
    bbo.reset()


def enqueue(cls: type[bbo.BaseOperation] = Visit, **sizes: Any) -> bbo.OperationRecord:
    options = dict(batch_size=BATCH, sub_batch_size=SUB_BATCH, min_batch_size=1)
    options.update(max_batch_size=ROWS, pause_ms=0, interval_seconds=0)
    return bbo.enqueue(cls, "items", "id", **{**options, **sizes}).operation


def sample(name: str, operation: bbo.OperationRecord, **extra: str) -> float | None:
    migration_id, identifier = labels(operation)
    return prometheus_client.REGISTRY.get_sample_value(  # type: ignore[no-any-return]
        name, {"migration_id": migration_id, "migration_identifier": identifier, **extra}
    )


def test_the_default_middleware_records_it() -> None:
    assert any(isinstance(m, PrometheusMetrics) for m in bbo.default_middleware())


def test_jobs_run_set_the_nine_metrics_of_their_operation(items: str) -> None:
    operation = enqueue()
    before = time.time()
    final, outcomes = drive(operation.id)
    assert final.status == OperationStatus.FINISHED and len(outcomes) == 2

    prefix = "background_operation_"
    last = outcomes[-1].job  # the optimizer may have resized the second job
    assert sample(f"{prefix}job_batch_size", operation) == last.batch_size
    assert sample(f"{prefix}job_sub_batch_size", operation) == SUB_BATCH
    assert sample(f"{prefix}job_interval_seconds", operation) == 0
    assert 0 < sample(f"{prefix}job_duration_seconds", operation) < 30  # type: ignore[operator]
    assert sample(f"{prefix}job_updated_tuples_total", operation) == ROWS
    assert sample(f"{prefix}job_query_duration_seconds_count", operation) == ROWS / SUB_BATCH
    assert 0 < sample(f"{prefix}job_query_duration_seconds_sum", operation) < 30  # type: ignore[operator]
    assert sample(f"{prefix}worker_migrated_tuples_total", operation) == ROWS
    assert sample(f"{prefix}worker_total_tuple_count", operation) == final.total_tuple_count
    last_update = sample(f"{prefix}worker_last_update_time_seconds", operation)
    assert last_update is not None and before <= last_update <= time.time()
    committed = sample(f"{prefix}sub_batches_total", operation, outcome="committed")
    assert committed == ROWS / SUB_BATCH
    assert sample(f"{prefix}sub_batches_total", operation, outcome="failed") is None


def test_a_failed_attempt_counts_the_sub_batch_it_rolled_back(items: str) -> None:
    operation = enqueue(Failing, batch_size=ROWS)
    assert orchestrate("main", operation.id, None) == Decision.DISPATCHED
    outcome = run("main", operation.id, dispatched_job_id(operation))
    assert outcome is not None and outcome.exception is not None
    prefix = "background_operation_"
    assert sample(f"{prefix}sub_batches_total", operation, outcome="failed") == 1
    assert sample(f"{prefix}sub_batches_total", operation, outcome="committed") is None
    assert sample(f"{prefix}job_updated_tuples_total", operation) == 0


def test_each_way_a_run_ends_names_the_sub_batch_it_lost(items: str) -> None:
    operation = enqueue(Failing, batch_size=ROWS)
    assert orchestrate("main", operation.id, None) == Decision.DISPATCHED
    failed = run("main", operation.id, dispatched_job_id(operation))
    assert failed is not None and failed.status == JobStatus.FAILED
    timeout = SubBatchTimeout("statement timeout in the sub-batch", kind="statement_timeout")
    given_back = dataclasses.replace(failed, status=JobStatus.PENDING, exception=None)
    assert lost_sub_batch(failed) == "failed"
    assert lost_sub_batch(dataclasses.replace(failed, exception=timeout)) == "timed_out"
    assert lost_sub_batch(given_back) == "rolled_back"  # interrupted mid-sub-batch
    stopped = dataclasses.replace(given_back, interrupted_reason="health_stop")
    assert lost_sub_batch(stopped) is None  # stopped at a checkpoint: nothing lost
    done = dataclasses.replace(given_back, status=JobStatus.SUCCEEDED)
    assert lost_sub_batch(done) is None


def test_a_health_stop_counts_one_hold_for_its_indicator(items: str) -> None:
    operation = enqueue()
    STOP["now"] = True
    assert orchestrate("main", operation.id, None) == Decision.HELD_BY_CHECK
    held = bbo.get_operation(operation.id)
    assert held.hold_reason == f"{INDICATOR}: queue latency above 2s"
    holds = "background_operation_health_holds_total"
    assert sample(holds, operation, indicator=INDICATOR) == 1
    assert orchestrate("main", operation.id, None) == Decision.ON_HOLD  # no new hold
    assert sample(holds, operation, indicator=INDICATOR) == 1
