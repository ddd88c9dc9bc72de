"""The kill switch per operation class, in-process on a real Postgres: ``disable`` stops a
running job at its next sub-batch boundary and keeps the scheduler and the orchestrator off
the class; ``enable`` lets it carry on from its cursor. Bad input writes nothing. (The same on
real dramatiq workers: tests/acceptance/test_kill_switch_workers.py.)"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import logs
from dramatiq_bbo.errors import InvalidSteering, InvalidTransition
from dramatiq_bbo.jobs.ending import CLASS_DISABLED
from dramatiq_bbo.pipeline import orchestrator, scheduler
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.integration.steering_support import (
    DisableItself,
    Visit,
    events,
    make_counters,
    named,
    operation_row,
    state,
    visits,
)

__all__ = ["events"]  # the fixture, re-exported for pytest


def enqueue(cls: type[bbo.BaseOperation] = Visit, **arguments: Any) -> Any:
    return bbo.enqueue(
        cls, "counters", "id", arguments=arguments, batch_size=100, sub_batch_size=20
    ).operation.id


def test_disable_lists_the_class_and_enable_removes_it(
    configured: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    make_counters(conn, 10)
    enqueue()
    enqueue(arguments_differ=True)  # a second unfinished operation of the class

    disabled = bbo.disable(Visit.name, reason="bad deploy 4711", by="alice")

    assert (disabled.job_class_name, disabled.reason, disabled.disabled_by) == (
        Visit.name,
        "bad deploy 4711",
        "alice",
    )
    assert disabled.unfinished_operations == 2
    assert bbo.disabled_classes() == [disabled]
    as_json = json.loads(json.dumps(disabled.as_dict()))
    assert as_json["job_class_name"] == Visit.name and as_json["disabled_by"] == "alice"
    (event,) = named(events, logs.CLASS_DISABLED)
    assert (event["by"], event["reason"], event["unfinished_operations"]) == (
        "alice",
        "bad deploy 4711",
        2,
    )

    removed = bbo.enable(Visit.name, by="bob")

    assert removed.disabled_by == "alice"
    assert bbo.disabled_classes() == []
    (enabled,) = named(events, logs.CLASS_ENABLED)
    assert (enabled["by"], enabled["disabled_by"]) == ("bob", "alice")


def test_a_class_no_worker_knows_can_be_disabled(configured: str) -> None:
    disabled = bbo.disable("app.operations.NotDeployedYet")

    assert disabled.unfinished_operations == 0 and disabled.disabled_by is None
    assert [d.job_class_name for d in bbo.disabled_classes()] == ["app.operations.NotDeployedYet"]


def test_disabling_twice_is_refused_and_names_who_disabled_it(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    bbo.disable(Visit.name, reason="corrupts rows", by="alice")
    before = state(conn)

    with pytest.raises(InvalidTransition, match="already disabled since .* by alice: corrupts"):
        bbo.disable(Visit.name, reason="again", by="bob")

    assert state(conn) == before


def test_enabling_a_class_that_is_not_disabled_is_refused(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    bbo.disable("another.Class")
    before = state(conn)

    with pytest.raises(InvalidTransition, match="is not disabled"):
        bbo.enable(Visit.name)

    assert state(conn) == before


BAD_INPUT = [
    (lambda: bbo.disable(""), "class name must be non-empty text"),
    (lambda: bbo.disable("  "), "class name must be non-empty text"),
    (lambda: bbo.disable(None), "class name must be"),  # type: ignore[arg-type]
    (lambda: bbo.disable(Visit), "class name must be"),  # type: ignore[arg-type]
    (lambda: bbo.disable("x" * 256), "at most 255 characters"),
    (lambda: bbo.disable("a\x00b"), "class name must be"),
    (lambda: bbo.disable("ok", reason="r" * 1001), "reason must be at most 1000"),
    (lambda: bbo.disable("ok", reason=3), "reason must be text"),  # type: ignore[arg-type]
    (lambda: bbo.disable("ok", by=""), "by must be"),
    (lambda: bbo.enable(""), "class name must be"),
    (lambda: bbo.enable(Visit.name, by="b" * 256), "by must be at most 255"),
]


def test_bad_kill_switch_input_is_refused_and_writes_nothing(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    bbo.disable(Visit.name)
    before = state(conn)

    for call, message in BAD_INPUT:
        with pytest.raises(InvalidSteering, match=message):
            call()

    assert state(conn) == before


def test_the_scheduler_and_the_orchestrator_leave_a_disabled_class_alone(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 100)
    operation_id = enqueue()
    bbo.disable(Visit.name)

    assert str(operation_id) not in scheduler.tick("main").dispatched
    decision = orchestrator.orchestrate("main", operation_id)

    assert decision == orchestrator.Decision.CLASS_DISABLED
    row = operation_row(conn, operation_id)
    assert row["status"] == OperationStatus.QUEUED and row["lease_owner"] is None
    assert bbo.list_jobs(operation_id) == []

    bbo.enable(Visit.name)

    assert str(operation_id) in scheduler.tick("main").dispatched


def test_disable_stops_a_running_job_at_the_next_boundary_and_enable_resumes_it(
    configured: str, conn: psycopg.Connection[Any], events: list[dict[str, Any]]
) -> None:
    make_counters(conn, 100)
    operation_id = enqueue(DisableItself, disable_at=40)  # in the 2nd sub-batch of 20

    stopped = bbo.run_to_completion(operation_id)

    # The second sub-batch committed, then the boundary's check saw the switch: no third.
    assert stopped.status == OperationStatus.ACTIVE
    assert stopped.processed_tuple_count == 40
    assert visits(conn) == {1: 40, 0: 60}
    (job,) = bbo.list_jobs(operation_id)
    assert (job.status, job.attempts, job.checkpoint_cursor) == (JobStatus.PENDING, 0, [40])
    assert job.metrics["interrupted_reason"] == CLASS_DISABLED
    with pytest.raises(InvalidTransition, match="is disabled"):
        bbo.finalize(operation_id)
    assert bbo.run_to_completion(operation_id).processed_tuple_count == 40  # stays stopped

    bbo.enable(DisableItself.name, by="ops")
    finished = bbo.finalize(operation_id, by="ops")

    assert finished.status == OperationStatus.FINISHED
    assert visits(conn) == {1: 100}  # from its checkpoint: nothing twice, nothing skipped
    assert [e["by"] for e in named(events, logs.CLASS_DISABLED)] == ["test"]
