"""The batch optimizer applied after a job, inside the transaction that records its end.

:mod:`dramatiq_bbo.jobs.optimizer` holds the rules; this is how a job's end uses them: the
operation's recent successful jobs (:data:`WINDOW`), the target duration its interval sets,
a decision that never stops the operation when it fails, and the size an operation reached
kept for its configuration's next operation when it finishes. The job chain
(:mod:`dramatiq_bbo.jobs.creation`) calls it, so ``run_to_completion`` grows its jobs as the
pipeline's runner does.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..db import REGISTRY
from ..logs import logger
from ..queries import query
from ..state.records import JobRecord, OperationRecord
from ..state.scopes import tables_for
from .learned_sizes import remember
from .optimizer import OptimizerDecision, decide_for_operation, log_decision, target_duration

#: the recent successful jobs the optimizer looks back on
WINDOW = 10


def recent_jobs_query(operation: OperationRecord) -> tuple[Any, dict[str, Any]]:
    """The statement and parameters reading the optimizer's recent jobs (to pipeline)."""
    _, jobs = tables_for(operation)
    params = {"worker_id": operation.id, "limit": WINDOW}
    return query("pipeline_recent_successful_jobs", jobs=jobs), params


def sized_by_optimizer(operation: OperationRecord, job: JobRecord) -> bool:
    """Whether the operation's batch size is still the one ``job`` was cut with: an
    operator's size set meanwhile (``bbo.update``) is kept for the next job as asked."""
    return job.batch_size == operation.batch_size


def job_target(operation: OperationRecord) -> float:
    """The duration the operation's jobs are sized to last."""
    settings = REGISTRY.settings
    return target_duration(
        float(operation.interval_seconds), float(settings.min_job_budget_seconds)
    )


def decide(operation: OperationRecord, recent: list[JobRecord]) -> OptimizerDecision | None:
    """The optimizer's decision for the next job (logged), or None if it failed: the
    optimizer must never stop an operation."""
    interval = float(operation.interval_seconds)
    target = None if interval > 0 else job_target(operation)
    try:
        decision = decide_for_operation(operation, recent, target_duration_seconds=target)
    except Exception:
        logger.exception("batch optimizer failed for operation %s", operation.id)
        return None
    log_decision(operation, decision)
    return decision


def keep_learned(
    conn: psycopg.Connection[Any], operation: OperationRecord, decision: OptimizerDecision
) -> None:
    """Keep the size the finished operation reached for its configuration, in a savepoint
    of the caller's transaction: a lesson lost costs speed only, never the finish."""
    try:
        with conn.transaction():
            remember(conn, operation, decision.new, job_target(operation))
    except psycopg.Error:
        logger.exception("keeping the batch size operation %s learned failed", operation.id)
