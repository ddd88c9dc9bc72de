"""The retry policy, as pure functions so every runner (run_to_completion, the pipeline's
runner actor) applies the same rules and the rules are unit-tested without a database.

The rules: a failed job is retried up to ``max_attempts``; a sub-batch timeout shrinks the
job's ``sub_batch_size`` by 25% per timeout, never below 35% of the operation's original; a
job that still times out on its last attempt is split in half; the whole operation fails when,
after at least 50 jobs, more than half of them failed.
"""

from __future__ import annotations

import math

from ..state.records import JobRecord, JobStatus

#: fraction kept of the sub-batch size after each timeout
SHRINK_FACTOR = 0.75
#: the sub-batch size never shrinks below this fraction of the original
SHRINK_FLOOR = 0.35
#: operation-level failure: at least this many jobs...
FAILURE_MIN_JOBS = 50
#: ...and strictly more than this fraction of them failed for good
FAILURE_RATIO = 0.5

TIMEOUT_EXCEPTION = "dramatiq_bbo.errors.SubBatchTimeout"


def timed_out(job: JobRecord) -> bool:
    """Whether the job's last attempt ended on a sub-batch timeout (statement or lock)."""
    return job.exception_class == TIMEOUT_EXCEPTION


def should_retry(job: JobRecord, max_attempts: int) -> bool:
    """A failed job is run again from its checkpoint while it has attempts left."""
    return job.status == JobStatus.FAILED and job.attempts < max_attempts


def shrunk_sub_batch_size(current: int, original: int) -> int:
    """The sub-batch size after one more timeout: −25%, floored at 35% of the original.

    Never grows: if ``current`` is already under the floor (set by hand), it is kept.
    """
    floor = max(1, math.ceil(original * SHRINK_FLOOR))
    shrunk = max(floor, int(current * SHRINK_FACTOR))
    return max(1, min(current, shrunk))


def should_split(job: JobRecord, timeout: bool, max_attempts: int) -> bool:
    """A job that timed out on its last attempt is split in two rather than failed: smaller
    ranges are what a timeout asks for once shrinking sub-batches did not help. Whether the
    range holds two rows at all is for ``keyset.split_range`` to say."""
    return timeout and job.attempts >= max_attempts


def failed_for_good(job: JobRecord, timeout: bool, max_attempts: int) -> bool:
    """The job failed with no attempt left and will not be split: it counts towards the
    operation's failure threshold now. A job that timed out on its last attempt does not
    (yet): the orchestrator replaces it by two halves, and it only counts as failed if its
    range is too small to split (see ``execution_job_counts``)."""
    return (
        job.status == JobStatus.FAILED
        and job.attempts >= max_attempts
        and not should_split(job, timeout, max_attempts)
    )


def operation_should_fail(total_jobs: int, failed_jobs: int) -> bool:
    """Stop an operation that mostly fails instead of grinding through its whole range."""
    return total_jobs >= FAILURE_MIN_JOBS and failed_jobs > total_jobs * FAILURE_RATIO
