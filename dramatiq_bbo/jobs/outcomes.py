"""How a run of a job ended: its outcome, the exception recorded on the job row, and the
transition events logged for jobs and operations ("workers")."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import SubBatchTimeout
from ..logs import JOB_TRANSITION, WORKER_TRANSITION, event, operation_fields
from ..state.records import JobRecord, JobStatus, OperationRecord, OperationStatus
from ..walk.timeouts import timeout_kind

#: longest exception message kept on a job row
MAX_EXCEPTION_MESSAGE = 2000


@dataclass(frozen=True)
class JobOutcome:
    """How one run of a job ended. ``rows``/``affected`` count this run only."""

    status: JobStatus
    job: JobRecord
    rows: int
    affected: int
    duration: float
    exception: BaseException | None = None
    interrupted_reason: str | None = None
    #: how long each sub-batch this run committed took, in order (seconds)
    sub_batch_seconds: tuple[float, ...] = ()

    @property
    def timed_out(self) -> bool:
        return isinstance(self.exception, SubBatchTimeout)


def as_timeout(exception: BaseException) -> BaseException:
    """A timeout raised through the author's own queries becomes SubBatchTimeout too."""
    kind = timeout_kind(exception)
    if kind is None or isinstance(exception, SubBatchTimeout):
        return exception
    timeout = SubBatchTimeout(f"{kind} in the sub-batch: {str(exception).strip()}", kind=kind)
    timeout.__cause__ = exception
    return timeout


def class_name(exception: BaseException | None) -> str | None:
    if exception is None:
        return None
    kind = type(exception)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return name[:255]


def exception_message(exception: BaseException | None) -> str | None:
    if exception is None:
        return None
    text = str(exception)
    return text if len(text) <= MAX_EXCEPTION_MESSAGE else text[: MAX_EXCEPTION_MESSAGE - 3] + "..."


def job_event(
    operation: OperationRecord,
    job: JobRecord,
    previous: JobStatus,
    *,
    interrupted_reason: str | None = None,
) -> None:
    level = logging.WARNING if job.status == JobStatus.FAILED else logging.INFO
    event(
        JOB_TRANSITION,
        level=level,
        **operation_fields(operation),
        job_id=str(job.id),
        previous_state=previous.name.lower(),
        new_state=job.status.name.lower(),
        attempts=job.attempts,
        exception_class=job.exception_class,
        exception_message=job.exception_message,
        interrupted_reason=interrupted_reason,
        processed_tuple_count=job.processed_tuple_count,
    )


def worker_event(operation: OperationRecord, previous: OperationStatus | None) -> None:
    """Log an operation ("worker") status change."""
    event(
        WORKER_TRANSITION,
        **operation_fields(operation, "column_name", "organization_id"),
        previous_state=None if previous is None else previous.name.lower(),
        new_state=operation.status.name.lower(),
    )
