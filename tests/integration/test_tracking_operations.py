"""``self.track_success()`` / ``self.track_failure(...)`` in operations: outcomes written in
the sub-batch's own transaction, so a sub-batch that fails after reporting and is retried
counts each item once; the finaliser runs once, after the commit that completed the total;
misuse is a typed error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors, tracking
from dramatiq_bbo.operation import unregister
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.integration.pipeline_support import drive, no_broker  # noqa: F401
from tests.integration.tracking_support import Recorder, rows

pytestmark = pytest.mark.usefixtures("no_broker")

#: (first id of a sub-batch, attempt) of the sub-batches that raise after reporting
FAIL_ONCE: set[int] = set()
SEEN: list[tuple[int, int]] = []


class TrackProjects(bbo.BaseOperation):
    """Reports each row: ids divisible by 7 fail, the others succeed; a sub-batch whose first
    id is in FAIL_ONCE raises after reporting, on its first attempt only."""

    name = "tracking_test.track_projects"
    pause_ms = 0
    interval_seconds = 0

    def process(self, sub_batch: bbo.SubBatch) -> None:
        for row in sub_batch.dicts():
            if row["id"] % 7 == 0:
                self.track_failure(
                    entity_id=row["id"],
                    entity_type="Project",
                    entity_name=f"project {row['id']}",
                    entity_full_path=f"acme/p{row['id']}",
                    error_message="Permission denied",
                    error_code="service_error",
                )
            else:
                self.track_success()
        first = sub_batch.bounds[0]
        SEEN.append((first, self.job.attempts))
        if first in FAIL_ONCE and self.job.attempts == 1:
            raise RuntimeError(f"sub-batch {first} fails after reporting")


@pytest.fixture
def recorder(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Recorder]:
    conn.execute("CREATE TABLE projects (id bigint PRIMARY KEY)")
    conn.execute("INSERT INTO projects SELECT generate_series(1, 100)")
    recorder = Recorder()
    bbo.configure(dsn=dsn, tracking_notifier=recorder)
    FAIL_ONCE.clear()
    SEEN.clear()
    yield recorder
    bbo.reset()


def enqueue(tracked: int | None, **arguments: Any) -> Any:
    return bbo.enqueue(
        TrackProjects,
        "projects",
        "id",
        arguments={"tracked_operation_id": tracked, **arguments},
        batch_size=50,
        sub_batch_size=10,
        min_batch_size=1,
        max_batch_size=50,
    ).operation


def test_a_retried_sub_batch_counts_each_item_once_and_the_finaliser_runs_once(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracked = tracking.create_operation("bulk_update", 1, 100)
    FAIL_ONCE.update({21, 61})  # one sub-batch in each job raises after reporting
    final, _ = drive(enqueue(tracked).id)

    assert final.status == OperationStatus.FINISHED
    assert (21, 1) in SEEN and (21, 2) in SEEN and (61, 2) in SEEN  # really retried
    assert any(j.attempts == 2 for j in bbo.list_jobs(final))
    assert all(j.status == JobStatus.SUCCEEDED for j in bbo.list_jobs(final))
    [(operation, items)] = recorder.calls
    assert (operation.successful_items, operation.failed_items) == (86, 14)
    assert sorted(int(i.entity_id) for i in items) == list(range(7, 101, 7))
    assert rows(conn) == (0, 0, 0)  # notified, then cleaned up


def test_counters_move_with_each_committed_sub_batch_only(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracked = tracking.create_operation("bulk_update", 1, 1_000)  # more than the table
    assert tracked is not None
    drive(enqueue(tracked).id)
    operation = tracking.get_operation(tracked)
    assert (operation.successful_items, operation.failed_items) == (86, 14)
    assert len(tracking.get_failed_items(tracked)) == 14
    assert recorder.calls == []


def test_tracking_turned_off_reports_nothing_and_the_operation_still_runs(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracking.disable("bulk_update")
    tracked = tracking.create_operation("bulk_update", 1, 100)
    assert tracked is None
    final, _ = drive(enqueue(tracked).id)
    assert final.status == OperationStatus.FINISHED
    assert rows(conn) == (0, 0, 0) and recorder.calls == []


def test_reporting_past_the_total_or_without_an_id_fails_the_job_and_writes_nothing(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracked = tracking.create_operation("bulk_update", 1, 5)  # fewer than one sub-batch
    assert tracked is not None
    final, _ = drive(enqueue(tracked).id)
    assert final.status == OperationStatus.FAILED
    [job, *_] = bbo.list_jobs(final)
    assert job.exception_class == "dramatiq_bbo.errors.TrackedCountExceeded"
    assert rows(conn) == (1, 0, 0)

    missing = bbo.enqueue(
        TrackProjects,
        "projects",
        "id",
        batch_size=50,
        sub_batch_size=10,
        min_batch_size=1,
        max_batch_size=50,
    ).operation
    final, _ = drive(missing.id)
    assert bbo.list_jobs(final)[0].exception_class == "dramatiq_bbo.errors.InvalidTrackingInput"


def test_track_calls_outside_a_sub_batch_are_refused() -> None:
    operation = TrackProjects({"tracked_operation_id": 1})
    with pytest.raises(errors.OperationDefinitionError, match="inside a sub-batch"):
        operation.track_success()
    with pytest.raises(errors.OperationDefinitionError):
        operation.track_failure(entity_id=1)


def teardown_module() -> None:
    unregister(TrackProjects.name)
