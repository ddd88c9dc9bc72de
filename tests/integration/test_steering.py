"""Steering by hand, in-process on a real Postgres: retry, update, finalize, and ``by=`` on
pause/resume/cancel. Every refusal is shown to write nothing. (The kill switch is in
test_kill_switch.py.)"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import logs
from dramatiq_bbo.errors import (
    InvalidBatchSizes,
    InvalidOperationId,
    InvalidSteering,
    InvalidTransition,
    OperationNotFound,
    UnknownDatabase,
    UnknownOperationClass,
)
from dramatiq_bbo.operate import finalize as finalize_module
from dramatiq_bbo.pipeline import runner, scheduler
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.integration.pipeline_support import dispatched_job_id, no_broker, run_one_job
from tests.integration.steering_support import (
    FailWhileBroken,
    ResizeItself,
    Visit,
    events,
    make_counters,
    named,
    operation_row,
    state,
    visits,
)

__all__ = ["events", "no_broker"]  # the fixtures, re-exported for pytest


@pytest.fixture
def steered(dsn: str) -> Any:
    """Configured on this test's database, one attempt per job (failures are final at once)."""
    bbo.configure(dsn=dsn, max_attempts=1)
    try:
        yield dsn
    finally:
        bbo.reset()


def enqueue(cls: type[bbo.BaseOperation] = Visit, **sizes: Any) -> Any:
    sizes = {"batch_size": 100, "sub_batch_size": 20, **sizes}
    return bbo.enqueue(cls, "counters", "id", **sizes).operation.id


def failed_operation(conn: psycopg.Connection[Any], broken: list[int]) -> Any:
    """A failed operation over 300 counters: the jobs holding ``broken`` rows failed."""
    make_counters(conn, 300)
    conn.execute("CREATE TABLE broken (id bigint PRIMARY KEY)")
    conn.execute("INSERT INTO broken SELECT unnest(%s::bigint[])", [broken])
    operation_id = enqueue(FailWhileBroken)
    assert bbo.run_to_completion(operation_id).status == OperationStatus.FAILED
    return operation_id


# -- pause / resume / cancel name who did it -------------------------------------------------


def test_pause_resume_and_cancel_log_who_did_it(
    steered: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    make_counters(conn, 10)
    operation_id = enqueue()

    bbo.pause(operation_id, by="alice")
    bbo.resume(operation_id, by="bob")
    cancelled = bbo.cancel(operation_id)

    assert cancelled.status == OperationStatus.CANCELLED
    (paused,) = named(events, logs.OPERATION_PAUSED)
    assert paused["by"] == "alice" and paused["operation_id"] == str(operation_id)
    assert (paused["previous_state"], paused["new_state"]) == ("queued", "paused")
    (resumed,) = named(events, logs.OPERATION_RESUMED)
    assert resumed["by"] == "bob" and resumed["new_state"] == "queued"
    (cancel_event,) = named(events, logs.OPERATION_CANCELLED)
    assert cancel_event["by"] is None and cancel_event["new_state"] == "cancelled"


BAD_OPERATORS = ["", "   ", "a" * 256, "nul\x00", "\udc80", 42, b"alice"]


def test_every_steering_call_refuses_a_bad_operator_name_and_changes_nothing(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 10)
    operation_id = enqueue()
    before = state(conn)

    for by in BAD_OPERATORS:
        for steer in (bbo.pause, bbo.resume, bbo.cancel, bbo.retry, bbo.finalize):
            with pytest.raises(InvalidSteering, match="by must be"):
                steer(operation_id, by=by)

    assert state(conn) == before


# -- retry -------------------------------------------------------------------------------------


def test_retry_requeues_the_failed_jobs_and_the_operation_finishes_from_its_cursor(
    steered: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    operation_id = failed_operation(conn, broken=[150])
    failed = [j for j in bbo.list_jobs(operation_id) if j.status == JobStatus.FAILED]
    assert len(failed) == 1 and failed[0].checkpoint_cursor == [140]
    conn.execute("DELETE FROM broken")  # the bug is fixed

    retried = bbo.retry(operation_id, by="carol")

    assert retried.status == OperationStatus.ACTIVE
    assert retried.finished_at is None
    job = next(j for j in bbo.list_jobs(operation_id) if j.id == failed[0].id)
    assert (job.status, job.attempts, job.metrics["retries"]) == (JobStatus.PENDING, 0, 1)
    (event,) = named(events, logs.OPERATION_RETRIED)
    assert event["by"] == "carol" and event["requeued_jobs"] == 1
    assert (event["previous_state"], event["new_state"]) == ("failed", "active")

    finished = bbo.run_to_completion(operation_id)
    assert finished.status == OperationStatus.FINISHED
    assert visits(conn) == {1: 300}  # the failed sub-batch rolled back, then ran once
    assert finished.processed_tuple_count == 300


def test_retry_of_an_active_operation_requeues_without_a_transition(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = failed_operation(conn, broken=[5])
    conn.execute(  # as if it had failed while other jobs still ran
        "UPDATE bbo.background_operation_workers_cell_local SET status = 1, finished_at = NULL"
        " WHERE id = %s",
        [operation_id],
    )
    conn.execute("DELETE FROM broken")

    assert bbo.retry(operation_id).status == OperationStatus.ACTIVE
    assert {j.status for j in bbo.list_jobs(operation_id)} == {
        JobStatus.PENDING,
        JobStatus.SUCCEEDED,
    }


def test_retry_refuses_an_operation_without_failed_jobs_and_changes_nothing(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 100)
    active = enqueue()
    conn.execute(
        "UPDATE bbo.background_operation_workers_cell_local SET status = 1 WHERE id = %s", [active]
    )
    before = state(conn)

    with pytest.raises(InvalidTransition, match="no failed job"):
        bbo.retry(active)

    assert state(conn) == before


@pytest.mark.parametrize("status", [OperationStatus.CANCELLED, OperationStatus.QUEUED])
def test_retry_refuses_a_cancelled_or_queued_operation_even_with_failed_jobs(
    steered: str, conn: psycopg.Connection[Any], status: OperationStatus
) -> None:
    operation_id = failed_operation(conn, broken=[5])
    conn.execute(
        "UPDATE bbo.background_operation_workers_cell_local SET status = %s WHERE id = %s",
        [int(status), operation_id],
    )
    before = state(conn)

    with pytest.raises(InvalidTransition, match=f"it is {status.name.lower()}"):
        bbo.retry(operation_id)

    assert state(conn) == before


def test_retry_of_a_finished_operation_is_refused(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 50)
    operation_id = enqueue()
    bbo.run_to_completion(operation_id)
    before = state(conn)

    with pytest.raises(InvalidTransition, match="it is finished"):
        bbo.retry(operation_id, by="dave")

    assert state(conn) == before


@pytest.mark.parametrize(
    ("operation_id", "error"),
    [(987654, OperationNotFound), ("not-an-id", InvalidOperationId), (None, InvalidOperationId)],
)
def test_steering_an_unknown_or_malformed_id_is_refused(
    steered: str, conn: psycopg.Connection[Any], operation_id: Any, error: type[Exception]
) -> None:
    make_counters(conn, 10)
    enqueue()
    before = state(conn)

    for call in (
        lambda: bbo.retry(operation_id),
        lambda: bbo.update(operation_id, batch_size=10),
        lambda: bbo.finalize(operation_id),
        lambda: bbo.pause(operation_id),
    ):
        with pytest.raises(error):
            call()

    assert state(conn) == before


# -- update --------------------------------------------------------------------------------


def test_update_changes_the_sizes_of_the_next_job(
    steered: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    make_counters(conn, 300)
    operation_id = enqueue(batch_size=100, sub_batch_size=20, pause_ms=0, interval_seconds=0)
    bbo.pause(operation_id)

    updated = bbo.update(
        operation_id, batch_size=50, sub_batch_size=5, pause_ms=1, interval_seconds=0.5, by="eve"
    )

    assert (updated.batch_size, updated.sub_batch_size) == (50, 5)
    assert (updated.pause_ms, updated.interval_seconds) == (1, 0.5)
    assert updated.min_batch_size == 50  # the optimizer's range holds the operator's choice
    assert updated.status == OperationStatus.PAUSED  # sizes only
    (event,) = named(events, logs.OPERATION_UPDATED)
    assert event["by"] == "eve"
    assert (event["batch_size"], event["previous_batch_size"]) == (50, 100)
    bbo.resume(operation_id)
    bbo.run_to_completion(operation_id)
    first = bbo.list_jobs(operation_id)[0]
    assert (first.batch_size, first.sub_batch_size, first.pause_ms) == (50, 5, 1)


def test_update_of_one_size_keeps_the_others(steered: str, conn: psycopg.Connection[Any]) -> None:
    make_counters(conn, 10)
    operation_id = enqueue(batch_size=100, sub_batch_size=20)

    updated = bbo.update(operation_id, sub_batch_size=100)

    assert (updated.batch_size, updated.sub_batch_size) == (100, 100)
    assert bbo.update(operation_id, batch_size=2_000).max_batch_size >= 2_000


BAD_SIZES = [
    ({}, "nothing to update"),
    ({"batch_size": 0}, "batch_size must be an int > 0"),
    ({"batch_size": -5}, "batch_size must be"),
    ({"sub_batch_size": 0}, "sub_batch_size must be"),
    ({"batch_size": 2**31}, "batch_size must be"),
    ({"batch_size": 10.5}, "batch_size must be"),
    ({"batch_size": True}, "batch_size must be"),
    ({"batch_size": "100"}, "batch_size must be"),
    ({"pause_ms": -1}, "pause_ms must be"),
    ({"interval_seconds": -0.5}, "interval_seconds must be"),
    ({"interval_seconds": float("nan")}, "interval_seconds must be"),
    ({"interval_seconds": float("inf")}, "interval_seconds must be"),
    ({"sub_batch_size": 101}, "sub_batch_size 101 would be larger than batch_size 100"),
    ({"batch_size": 10}, "sub_batch_size 20 would be larger than batch_size 10"),
    ({"batch_size": 10, "sub_batch_size": 11}, "would be larger"),
]


def test_update_refuses_bad_or_inverted_sizes_and_changes_nothing(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 10)
    operation_id = enqueue(batch_size=100, sub_batch_size=20)
    before = state(conn)

    for sizes, message in BAD_SIZES:
        with pytest.raises(InvalidBatchSizes, match=message):
            bbo.update(operation_id, **sizes)

    assert state(conn) == before


def test_update_of_an_ended_operation_is_refused(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 10)
    operation_id = enqueue()
    bbo.cancel(operation_id)
    before = state(conn)

    with pytest.raises(InvalidTransition, match="it is cancelled"):
        bbo.update(operation_id, batch_size=500)

    assert state(conn) == before


# -- finalize ------------------------------------------------------------------------------


def test_finalize_runs_the_rest_now_and_reports_progress(
    steered: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    make_counters(conn, 500)
    operation_id = enqueue(batch_size=100, sub_batch_size=50)
    bbo.pause(operation_id)  # a paused operation is resumed by finalize
    seen: list[Any] = []

    finished = bbo.finalize(operation_id, on_progress=seen.append, by="frank")

    assert finished.status == OperationStatus.FINISHED
    assert visits(conn) == {1: 500}
    assert seen[0].status == OperationStatus.QUEUED and seen[0].processed_tuple_count == 0
    assert seen[-1].status == OperationStatus.FINISHED and seen[-1].progress == 1.0
    (event,) = named(events, logs.OPERATION_FINALIZED)
    assert event["by"] == "frank" and event["completed"] is True
    assert named(events, logs.OPERATION_RESUMED)[0]["by"] == "frank"


def test_finalize_survives_a_broken_progress_callback(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 100)
    operation_id = enqueue()

    def broken(record: Any) -> None:
        raise ValueError("the terminal went away")

    assert bbo.finalize(operation_id, on_progress=broken).status == OperationStatus.FINISHED
    assert visits(conn) == {1: 100}


def test_finalize_refuses_an_ended_operation_and_a_bad_callback(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 10)
    operation_id = enqueue()
    bbo.run_to_completion(operation_id)
    live = enqueue(batch_size=5, sub_batch_size=5)
    before = state(conn)

    with pytest.raises(InvalidTransition, match="it is finished"):
        bbo.finalize(operation_id)
    with pytest.raises(InvalidSteering, match="on_progress must be callable"):
        bbo.finalize(live, on_progress="bar")  # type: ignore[arg-type]
    with pytest.raises(InvalidSteering, match="by must be"):
        bbo.finalize(live, by="")

    assert state(conn) == before
    assert operation_row(conn, live)["status"] == OperationStatus.QUEUED


def test_an_organization_scoped_operation_is_steered_by_its_uuid(
    steered: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    make_counters(conn, 120)
    result = bbo.enqueue(
        Visit, "counters", "id", batch_size=50, sub_batch_size=10, organization_id=7, user_id=3
    )
    operation_id = str(result.operation.id)  # as a command line holds it

    bbo.pause(operation_id, by="org-admin")
    updated = bbo.update(operation_id, batch_size=40, sub_batch_size=20, by="org-admin")
    finished = bbo.finalize(operation_id, by="org-admin")

    assert updated.organization_id == 7 and updated.batch_size == 40
    assert finished.status == OperationStatus.FINISHED and visits(conn) == {1: 120}
    assert bbo.list_jobs(finished)[0].sub_batch_size == 20
    with pytest.raises(InvalidTransition, match="it is finished"):
        bbo.retry(operation_id)
    assert {e["operation_id"] for e in events if e.get("by") == "org-admin"} == {operation_id}


def test_an_interrupted_finalize_gives_the_job_back_at_its_checkpoint(
    steered: str,
    conn: psycopg.Connection[Any],
    events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(finalize_module, "PROGRESS_SECONDS", 0.0)  # report at every boundary
    make_counters(conn, 200)
    operation_id = enqueue(batch_size=200, sub_batch_size=20)
    calls: list[int] = []

    def ctrl_c_on_the_fourth_report(record: Any) -> None:
        calls.append(record.processed_tuple_count)
        if len(calls) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bbo.finalize(operation_id, on_progress=ctrl_c_on_the_fourth_report, by="gina")

    (job,) = bbo.list_jobs(operation_id)
    assert job.status == JobStatus.PENDING and job.checkpoint_cursor == [60]
    assert operation_row(conn, operation_id)["lease_owner"] is None  # nothing left held
    (event,) = named(events, logs.OPERATION_FINALIZED)
    assert event["by"] == "gina" and event["completed"] is False
    assert bbo.finalize(operation_id).status == OperationStatus.FINISHED
    assert visits(conn) == {1: 200}


def test_steering_an_unknown_database_is_refused(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 10)
    operation_id = enqueue()
    bbo.disable("some.Class")
    before = state(conn)

    for call in (
        lambda: bbo.pause(operation_id, database="nope"),
        lambda: bbo.retry(operation_id, database="nope"),
        lambda: bbo.update(operation_id, batch_size=10, database="nope"),
        lambda: bbo.finalize(operation_id, database="nope"),
        lambda: bbo.disable("other.Class", database="nope"),
        lambda: bbo.enable("some.Class", database="nope"),
        lambda: bbo.disabled_classes(database="nope"),
    ):
        with pytest.raises(UnknownDatabase, match="nope"):
            call()

    assert state(conn) == before


def test_a_batch_size_set_during_a_job_is_the_next_jobs_size_on_the_pipeline(
    steered: str, conn: psycopg.Connection[Any], no_broker: None
) -> None:
    make_counters(conn, 1_000)
    operation_id = bbo.enqueue(
        ResizeItself,
        "counters",
        "id",
        arguments={"batch_size": 70},
        batch_size=100,
        sub_batch_size=10,
        interval_seconds=60,  # jobs of a few ms, far below their target: it grows ×20
    ).operation.id

    run_one_job(operation_id)  # sets 70 mid-job
    run_one_job(operation_id)  # cut at 70, as the operator asked; then the optimizer goes on
    run_one_job(operation_id)

    sizes = [job.batch_size for job in bbo.list_jobs(operation_id)]
    assert sizes == [100, 70, 1_400]


def test_finalize_refuses_an_operation_whose_class_this_process_cannot_import(
    steered: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 10)
    operation_id = enqueue()
    bbo.pause(operation_id)
    conn.execute(
        "UPDATE bbo.background_operation_workers_cell_local SET job_class_name = 'gone.Class'"
    )
    before = state(conn)

    with pytest.raises(UnknownOperationClass, match="'gone.Class'"):
        bbo.finalize(operation_id)

    assert state(conn) == before  # still paused: nothing resumed, nothing started


def test_update_reaches_a_job_waiting_to_resume_but_not_its_range(
    steered: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    make_counters(conn, 200)
    operation_id = enqueue(batch_size=100, sub_batch_size=20)
    boundaries: list[int] = []

    def stop_after_two_sub_batches() -> str | None:
        boundaries.append(1)
        return "stopped by the test" if len(boundaries) == 2 else None

    bbo.run_to_completion(operation_id, stop_check=stop_after_two_sub_batches)
    (waiting,) = bbo.list_jobs(operation_id)
    assert (waiting.status, waiting.checkpoint_cursor) == (JobStatus.PENDING, [40])

    bbo.update(operation_id, sub_batch_size=200, pause_ms=0, batch_size=300)

    resumed = bbo.list_jobs(operation_id)[0]
    assert (resumed.sub_batch_size, resumed.pause_ms) == (100, 0)  # within its own batch
    assert (resumed.min_cursor, resumed.max_cursor) == (waiting.min_cursor, waiting.max_cursor)
    assert named(events, logs.OPERATION_UPDATED)[0]["waiting_jobs_updated"] == 1
    bbo.run_to_completion(operation_id)
    first, second = bbo.list_jobs(operation_id)
    assert first.metrics["sub_batches"] == 1  # the 60 rows left, in one sub-batch of 100
    assert (second.batch_size, second.sub_batch_size) == (300, 200)
    assert visits(conn) == {1: 200}


def test_a_shorter_interval_applies_without_waiting_out_the_old_one(
    steered: str, conn: psycopg.Connection[Any], no_broker: None
) -> None:
    make_counters(conn, 300)
    operation_id = enqueue(batch_size=100, sub_batch_size=50, interval_seconds=3_600)
    assert orchestrate("main", operation_id) == Decision.DISPATCHED
    token = operation_row(conn, operation_id)["lease_owner"]
    runner.run("main", operation_id, dispatched_job_id(bbo.get_operation(operation_id)), token)
    waiting = operation_row(conn, operation_id)  # the chained message waits out the hour
    assert waiting["lease_owner"] not in (None, token)
    assert str(operation_id) not in scheduler.tick("main").dispatched

    bbo.update(operation_id, interval_seconds=0)

    assert str(operation_id) in scheduler.tick("main").dispatched
    assert bbo.update(operation_id, interval_seconds=10).lease_owner is not None  # longer: kept


def test_a_runner_message_of_an_operation_cancelled_meanwhile_runs_one_sub_batch_at_most(
    steered: str, conn: psycopg.Connection[Any], no_broker: None
) -> None:
    """The claim reads the operation whatever its status; the job's stop check, made from
    that read, ends it at its first boundary."""
    make_counters(conn, 300)
    operation_id = enqueue(batch_size=300, sub_batch_size=50)
    assert orchestrate("main", operation_id) == Decision.DISPATCHED
    token = operation_row(conn, operation_id)["lease_owner"]
    job_id = dispatched_job_id(bbo.get_operation(operation_id))
    bbo.cancel(operation_id)

    runner.run("main", operation_id, job_id, token)

    assert visits(conn).get(1, 0) <= 50
    assert bbo.get_operation(operation_id).status == bbo.OperationStatus.CANCELLED
