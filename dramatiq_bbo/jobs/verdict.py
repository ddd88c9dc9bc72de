"""How one run of a job ended, before it is written: its status (succeeded, failed, or given
back as pending), the attempt refunded or the interruption counted, the metrics kept on the
job row, and what the middleware's ``after_job`` hook is told (:class:`JobOutcome`).

Apart from the runner (:mod:`dramatiq_bbo.jobs.run`), which writes it
(:func:`dramatiq_bbo.jobs.creation.end_and_next`): deciding is pure, writing is bookkeeping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..db import REGISTRY
from ..errors import TooManyInterruptions
from ..state.records import JobRecord, JobStatus
from .outcomes import JobOutcome, as_timeout, class_name, exception_message

if TYPE_CHECKING:
    from ..walk.checkpoint import SubBatchEngine

#: the interrupted_reason of a job stopped by its worker's shutdown (set by the pipeline)
WORKER_SHUTDOWN = "worker_shutdown"


@dataclass(frozen=True)
class Verdict:
    """One run's end: ``params`` of ``execution_finish_job``, and what it means."""

    status: JobStatus
    exception: BaseException | None
    interrupted: str | None
    params: dict[str, Any]

    def outcome(self, job: JobRecord, engine: SubBatchEngine | None, duration: float) -> JobOutcome:
        """What the middleware's after_job hook is told of the run, ``job`` as recorded."""
        return JobOutcome(
            status=self.status,
            job=job,
            rows=engine.processed if engine else 0,
            affected=engine.affected if engine else 0,
            duration=duration,
            exception=self.exception,
            interrupted_reason=self.interrupted,
            sub_batch_seconds=tuple(engine.durations) if engine else (),
        )


def verdict(
    job: JobRecord,
    owner: str,
    engine: SubBatchEngine | None,
    duration: float,
    exception: BaseException | None,
    release: bool,
) -> Verdict:
    """How the run of ``job`` held by ``owner`` ended. A worker shutdown (or an interrupt,
    ``release``) hands the job over: an interruption, not an attempt."""
    metrics: dict[str, Any] = dict(job.metrics or {})
    metrics.update(engine.metrics() if engine else {})
    metrics.update(duration_seconds=round(duration, 6), runs=int(metrics.get("runs", 0)) + 1)
    interrupted = engine.interrupted_reason if engine else None
    interruption = int(release or interrupted == WORKER_SHUTDOWN)
    if exception is None and interruption:
        exception = _too_many_interruptions(job)
    exception, status, refund = _ending(exception, release or bool(interrupted), metrics)
    if release or interrupted:
        metrics["interrupted_reason"] = interrupted or "released"
    params = {
        "status": int(status),
        "refund": refund,
        "interruption": interruption,
        "exception_class": class_name(exception),
        "exception_message": exception_message(exception),
        "metrics": json.dumps(metrics, default=str),
        "partition": job.partition,
        "id": job.id,
        "lease_owner": owner,
    }
    return Verdict(status, exception, interrupted, params)


def _ending(
    exception: BaseException | None, interrupted: bool, metrics: dict[str, Any]
) -> tuple[BaseException | None, JobStatus, int]:
    """How a run ends: failed (a timeout recognised as such, its kind in ``metrics``), given
    back as pending with the attempt refunded, or succeeded."""
    if exception is not None:
        exception = as_timeout(exception)
        metrics["timeout_kind"] = getattr(exception, "kind", None)
        return exception, JobStatus.FAILED, 0
    if interrupted:
        return None, JobStatus.PENDING, 1
    return None, JobStatus.SUCCEEDED, 0


def _too_many_interruptions(job: JobRecord) -> TooManyInterruptions | None:
    """Past ``max_interruptions``, one more interruption counts as a failed attempt."""
    most = int(REGISTRY.settings.max_interruptions)
    if job.interruptions < most:
        return None
    return TooManyInterruptions(
        f"job {job.id} was interrupted {job.interruptions + 1} times (max_interruptions is "
        f"{most}): this interruption counts as a failed attempt"
    )
