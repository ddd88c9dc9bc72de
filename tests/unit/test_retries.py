"""The retry policy, as pure functions: no database needed."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from dramatiq_bbo.jobs import retries
from dramatiq_bbo.state.records import JobRecord, JobStatus

NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def job(**changes: object) -> JobRecord:
    base = JobRecord(
        id=1,
        partition=1,
        worker_id=1,
        worker_partition=1,
        status=JobStatus.FAILED,
        attempts=1,
        batch_size=1000,
        sub_batch_size=100,
        pause_ms=0,
        min_cursor=[1],
        max_cursor=[1000],
        checkpoint_cursor=None,
        processed_tuple_count=0,
        affected_tuple_count=0,
        lease_owner=None,
        lease_expires_at=None,
        heartbeat_at=None,
        started_at=None,
        finished_at=None,
        metrics={},
        exception_class="builtins.RuntimeError",
        exception_message="boom",
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_failed_job_is_retried_while_it_has_attempts_left() -> None:
    assert retries.should_retry(job(attempts=1), max_attempts=3)
    assert retries.should_retry(job(attempts=2), max_attempts=3)
    assert not retries.should_retry(job(attempts=3), max_attempts=3)


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED])
def test_only_failed_jobs_are_retried(status: JobStatus) -> None:
    assert not retries.should_retry(job(status=status, attempts=0), max_attempts=3)


def test_sub_batch_size_shrinks_by_a_quarter_per_timeout() -> None:
    assert retries.shrunk_sub_batch_size(100, 100) == 75
    assert retries.shrunk_sub_batch_size(75, 100) == 56
    assert retries.shrunk_sub_batch_size(56, 100) == 42


def test_sub_batch_size_never_shrinks_below_35_percent_of_the_original() -> None:
    sizes = [100]
    for _ in range(10):
        sizes.append(retries.shrunk_sub_batch_size(sizes[-1], 100))
    assert sizes[-1] == 35
    assert min(sizes) == 35


def test_sub_batch_size_stays_at_least_one_and_never_grows() -> None:
    assert retries.shrunk_sub_batch_size(1, 1) == 1
    assert retries.shrunk_sub_batch_size(2, 2) == 1
    assert retries.shrunk_sub_batch_size(10, 1000) == 10  # already under the floor: kept


def test_a_timeout_on_the_last_attempt_splits_the_job() -> None:
    assert retries.should_split(job(attempts=3), timeout=True, max_attempts=3)
    assert not retries.should_split(job(attempts=2), timeout=True, max_attempts=3)
    assert not retries.should_split(job(attempts=3), timeout=False, max_attempts=3)


def test_a_job_counts_as_failed_for_good_without_attempts_left_unless_it_will_be_split() -> None:
    assert retries.failed_for_good(job(attempts=3), timeout=False, max_attempts=3)
    assert not retries.failed_for_good(job(attempts=2), timeout=False, max_attempts=3)
    assert not retries.failed_for_good(job(attempts=3), timeout=True, max_attempts=3)
    succeeded = job(attempts=3, status=JobStatus.SUCCEEDED)
    assert not retries.failed_for_good(succeeded, timeout=False, max_attempts=3)


def test_timed_out_recognises_the_sub_batch_timeout_class() -> None:
    assert retries.timed_out(job(exception_class=retries.TIMEOUT_EXCEPTION))
    assert not retries.timed_out(job())


def test_operation_fails_after_50_jobs_when_more_than_half_failed() -> None:
    assert retries.operation_should_fail(50, 26)
    assert not retries.operation_should_fail(50, 25)
    assert not retries.operation_should_fail(49, 49)
    assert retries.operation_should_fail(1000, 501)
