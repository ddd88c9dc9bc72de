"""``PrometheusMetrics``: each operation's numbers on dramatiq's own Prometheus exposition.

dramatiq's ``Prometheus`` middleware (in dramatiq's default middleware) runs the HTTP
exposition of a worker: ``dramatiq app`` forks one server (port ``dramatiq_prom_port``, 9191
by default) that reads the metric files every worker process writes in its multi-process
directory (``dramatiq_prom_db``; it sets ``PROMETHEUS_MULTIPROC_DIR`` when a worker process
boots). This middleware writes there too, from the hooks it is told about, so the metrics
below appear next to ``dramatiq_messages_total`` with no server of ours. Without dramatiq's
middleware (no multi-process directory) they live in ``prometheus_client``'s default
registry, for an application that exposes that one itself.

Every series is labelled ``migration_id`` (the operation's id) and ``migration_identifier``
(``Class/table.column``). After each run of a job:

- ``background_operation_job_batch_size``, ``..._job_sub_batch_size`` (gauges): the job's
  sizes; ``..._job_interval_seconds``: the operation's interval between jobs;
  ``..._job_duration_seconds``: how long the run took.
- ``..._job_updated_tuples_total`` (counter): rows the run's committed sub-batches walked.
- ``..._job_query_duration_seconds`` (histogram): each committed sub-batch's duration.
- ``background_operation_worker_migrated_tuples_total`` and ``..._worker_total_tuple_count``
  (gauges): the operation's processed rows and its estimated total;
  ``..._worker_last_update_time_seconds``: when it last ran (Unix time). Also set when the
  operation changes status in this process.
- ``background_operation_sub_batches_total`` (counter, label ``outcome``): ``committed``;
  ``failed`` or ``timed_out``, once per failed attempt (its open sub-batch rolled back);
  ``rolled_back``, once per run given back mid-sub-batch (an interrupt).
- ``background_operation_health_holds_total`` (counter, label ``indicator``): the holds a
  health stop put on the operation.

Gauges keep the most recent value any process wrote (``multiprocess_mode="mostrecent"``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .middleware import Middleware
from .state.records import JobStatus, OperationRecord, OperationStatus

if TYPE_CHECKING:  # a type only: middleware sits below the job runner that calls it
    from .jobs.outcomes import JobOutcome

#: the labels of every series: the operation's id and ``Class/table.column``
LABELS = ("migration_id", "migration_identifier")
#: seconds; a sub-batch is meant to take well under a second or two
QUERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class OperationMetrics:
    """The metric objects of this process (``prometheus_client`` collectors)."""

    batch_size: Any
    sub_batch_size: Any
    interval_seconds: Any
    duration_seconds: Any
    updated_tuples: Any
    query_duration: Any
    migrated_tuples: Any
    total_tuple_count: Any
    last_update_time: Any
    sub_batches: Any
    health_holds: Any


_lock = threading.Lock()
_metrics: OperationMetrics | None = None


def operation_metrics() -> OperationMetrics:
    """The metrics of this process, made at first use. Late on purpose: ``prometheus_client``
    picks its multi-process storage when first imported, so it must not be imported before
    dramatiq's middleware set ``PROMETHEUS_MULTIPROC_DIR`` in a worker process (it does when
    the process boots; the hooks run later, on messages)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _create()
        return _metrics


def _create() -> OperationMetrics:
    import prometheus_client as prom

    def gauge(name: str, doc: str) -> Any:
        return prom.Gauge(name, doc, LABELS, multiprocess_mode="mostrecent")

    prefix = "background_operation_"
    return OperationMetrics(
        batch_size=gauge(f"{prefix}job_batch_size", "Batch size of the operation's last job."),
        sub_batch_size=gauge(f"{prefix}job_sub_batch_size", "Sub-batch size of its last job."),
        interval_seconds=gauge(
            f"{prefix}job_interval_seconds", "Seconds the operation waits between jobs."
        ),
        duration_seconds=gauge(
            f"{prefix}job_duration_seconds", "How long the operation's last job run took."
        ),
        updated_tuples=prom.Counter(
            f"{prefix}job_updated_tuples_total", "Rows walked by committed sub-batches.", LABELS
        ),
        query_duration=prom.Histogram(
            f"{prefix}job_query_duration_seconds",
            "Duration of each committed sub-batch (its statements and checkpoint).",
            LABELS,
            buckets=QUERY_BUCKETS,
        ),
        migrated_tuples=gauge(
            f"{prefix}worker_migrated_tuples_total", "Rows the operation has processed."
        ),
        total_tuple_count=gauge(
            f"{prefix}worker_total_tuple_count", "Estimated rows the operation walks in all."
        ),
        last_update_time=gauge(
            f"{prefix}worker_last_update_time_seconds", "When the operation last ran (Unix)."
        ),
        sub_batches=prom.Counter(
            f"{prefix}sub_batches_total", "Sub-batches by outcome.", (*LABELS, "outcome")
        ),
        health_holds=prom.Counter(
            f"{prefix}health_holds_total",
            "Holds put on the operation by a health stop, by indicator.",
            (*LABELS, "indicator"),
        ),
    )


def labels(operation: OperationRecord) -> tuple[str, str]:
    """``(migration_id, migration_identifier)`` of ``operation``."""
    return str(operation.id), operation.identifier


class PrometheusMetrics(Middleware):
    """Records each operation's metrics from the pipeline's notifications (see the module
    docstring for the metrics). No parameters. In :func:`dramatiq_bbo.default_middleware`;
    the exposition is dramatiq's ``Prometheus`` middleware, which the broker must have."""

    def after_job(self, operation: OperationRecord, outcome: JobOutcome) -> None:
        metrics = operation_metrics()
        key = labels(operation)
        job = outcome.job
        metrics.batch_size.labels(*key).set(job.batch_size)
        metrics.sub_batch_size.labels(*key).set(job.sub_batch_size)
        metrics.interval_seconds.labels(*key).set(operation.interval_seconds)
        metrics.duration_seconds.labels(*key).set(outcome.duration)
        metrics.updated_tuples.labels(*key).inc(outcome.rows)
        histogram = metrics.query_duration.labels(*key)
        for seconds in outcome.sub_batch_seconds:
            histogram.observe(seconds)
        committed = len(outcome.sub_batch_seconds)
        if committed:
            metrics.sub_batches.labels(*key, "committed").inc(committed)
        lost = lost_sub_batch(outcome)
        if lost is not None:
            metrics.sub_batches.labels(*key, lost).inc()
        # the operation as claimed plus this run: one job of an operation runs at a time
        _progress(metrics, operation, operation.processed_tuple_count + outcome.rows)

    def after_transition(
        self,
        operation: OperationRecord,
        previous_status: OperationStatus,
        new_status: OperationStatus,
    ) -> None:
        _progress(operation_metrics(), operation, operation.processed_tuple_count)

    def after_hold(self, operation: OperationRecord, *, reason: str, indicator: str | None) -> None:
        if indicator is not None:
            operation_metrics().health_holds.labels(*labels(operation), indicator).inc()


def lost_sub_batch(outcome: JobOutcome) -> str | None:
    """The outcome of the sub-batch the run lost, if it lost one: a failed attempt rolled
    its open sub-batch back; a run given back without a stop between sub-batches (shutdown,
    interrupt) did too. A stop between sub-batches loses nothing."""
    if outcome.status == JobStatus.FAILED:
        return "timed_out" if outcome.timed_out else "failed"
    if outcome.status == JobStatus.PENDING and outcome.interrupted_reason is None:
        return "rolled_back"
    return None


def _progress(metrics: OperationMetrics, operation: OperationRecord, processed: int) -> None:
    key = labels(operation)
    metrics.migrated_tuples.labels(*key).set(processed)
    if operation.total_tuple_count is not None:
        metrics.total_tuple_count.labels(*key).set(operation.total_tuple_count)
    metrics.last_update_time.labels(*key).set(time.time())
