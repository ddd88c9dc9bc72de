"""A read-only organization is skipped while flagged (a running job stops within one
sub-batch) and resumes when the flag is lifted; a cell-local operation is untouched — with
the default table and with a custom check alike, through the pipeline (driven in the test
thread, no worker) and through ``run_to_completion``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo import clock
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.pipeline.broker import default_middleware
from dramatiq_bbo.read_only import mark_read_only
from dramatiq_bbo.state.records import OperationStatus
from tests.integration.enqueue_support import define_operation
from tests.integration.pipeline_support import visits
from tests.integration.read_only_support import (
    ORGANIZATION,
    ROWS,
    Flags,
    delayed_messages,
    deliver,
    flags,
    shown,
    visiting,
)

__all__ = ["define_operation", "flags"]  # the fixtures, re-exported for pytest

HOLD_SECONDS = 60.0
USER = 70


@pytest.fixture
def pipeline(configured: str, flags: Flags) -> Iterator[PostgresBroker]:
    """The pipeline set up on the test database, with the check of ``flags``; no worker."""
    bbo.configure(dsn=configured, max_running_jobs=4, **flags.settings())
    instance = PostgresBroker(url=configured, results=False, middleware=default_middleware())
    bbo.setup(instance)  # the conftest restores the process-wide hooks afterwards
    try:
        yield instance
    finally:
        instance.close()


def organization() -> dict[str, int]:
    return {"organization_id": ORGANIZATION, "user_id": USER}


def test_a_flagged_organization_is_skipped_and_resumes_once_the_flag_is_lifted(
    pipeline: PostgresBroker,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
    flags: Flags,
) -> None:
    enqueue = visiting(conn, define_operation)
    flags.flag(ORGANIZATION, "moving to cell B")
    with clock.simulated() as simulated:
        held = enqueue(**organization())  # the enqueue's own start finds the flag
        cell_local = enqueue()
        deliver(conn)
        # The cell-local operation ran to its end; the organization's never started.
        assert bbo.get_operation(cell_local.id).status == OperationStatus.FINISHED
        assert visits(conn, 2) == [(1, ROWS)]
        assert shown(cell_local) == (None, None)
        record = bbo.get_operation(held.id)
        assert record.status == OperationStatus.QUEUED and bbo.list_jobs(held.id) == []
        assert record.hold_reason == "read-only organization: moving to cell B"
        assert shown(held) == ("read-only organization", record.hold_reason)
        assert visits(conn, 1) == [(0, ROWS)]
        assert str(held.id) not in scheduler.tick("main").dispatched

        # Its hold ends while still flagged: asked again, held again, nothing runs.
        simulated.advance(seconds=HOLD_SECONDS + 1)
        deliver(conn, delayed=True)
        again = bbo.get_operation(held.id)
        assert again.on_hold_until is not None and record.on_hold_until is not None
        assert again.on_hold_until > record.on_hold_until
        assert bbo.list_jobs(held.id) == [] and visits(conn, 1) == [(0, ROWS)]

        # Lifted: at the end of the hold it resumes by itself and visits every row once.
        flags.lift(ORGANIZATION)
        simulated.advance(seconds=HOLD_SECONDS + 1)
        deliver(conn, delayed=True)
        assert bbo.get_operation(held.id).status == OperationStatus.FINISHED
        assert visits(conn, 1) == [(1, ROWS)]
        assert shown(held)[0] is None
    if flags.kind == "callable":  # asked about the organization only, never for cell-local work
        assert {asked for asked in flags.asked} == {("main", ORGANIZATION)}


def test_a_running_job_stops_within_one_sub_batch_of_the_flag_and_resumes_from_there(
    pipeline: PostgresBroker,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
    flags: Flags,
) -> None:
    enqueue = visiting(conn, define_operation, lambda: flags.flag(ORGANIZATION, "audit"))
    with clock.simulated() as simulated:
        operation = enqueue(**organization())  # one job of three sub-batches
        deliver(conn)
        # Flagged during the first sub-batch: the job stopped at the checkpoint after it.
        assert visits(conn, 1) == [(0, 20), (1, 10)]
        record = bbo.get_operation(operation.id)
        assert record.status == OperationStatus.ACTIVE and record.processed_tuple_count == 10
        assert shown(operation) == ("read-only organization", "read-only organization: audit")
        [job] = bbo.list_jobs(operation.id)
        assert job.processed_tuple_count == 10 and job.attempts <= 1  # not a failed attempt
        assert delayed_messages(conn) == 1  # its orchestrator, due when the hold ends

        flags.lift(ORGANIZATION)
        simulated.advance(seconds=HOLD_SECONDS + 1)
        deliver(conn, delayed=True)
        assert bbo.get_operation(operation.id).status == OperationStatus.FINISHED
        assert visits(conn, 1) == [(1, ROWS)]  # the rest, from the checkpoint: each row once


def test_run_to_completion_processes_nothing_for_a_read_only_organization(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
    flags: Flags,
) -> None:
    bbo.configure(dsn=configured, **flags.settings())
    enqueue = visiting(conn, define_operation, lambda: flags.flag(ORGANIZATION, "frozen"))
    operation = enqueue(**organization())
    cell_local = enqueue()

    stopped = bbo.run_to_completion(operation.id)  # flagged in its first sub-batch
    assert stopped.status == OperationStatus.ACTIVE and stopped.processed_tuple_count == 10
    assert stopped.hold_reason == "read-only organization: frozen"
    skipped = bbo.run_to_completion(operation.id)  # flagged before it starts: nothing runs
    assert skipped.processed_tuple_count == 10 and len(bbo.list_jobs(operation.id)) == 1
    assert visits(conn, 1) == [(0, 20), (1, 10)]
    assert shown(operation)[0] == "read-only organization"

    assert bbo.run_to_completion(cell_local.id).status == OperationStatus.FINISHED
    assert visits(conn, 2) == [(1, ROWS)]

    flags.lift(ORGANIZATION)
    assert bbo.run_to_completion(operation.id).status == OperationStatus.FINISHED
    assert visits(conn, 1) == [(1, ROWS)]


def test_run_to_completion_leaves_a_queued_operation_of_a_read_only_organization_queued(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
) -> None:
    enqueue = visiting(conn, define_operation)
    operation = enqueue(**organization())
    mark_read_only(ORGANIZATION)
    returned = bbo.run_to_completion(operation.id)
    assert returned.status == OperationStatus.QUEUED
    assert returned.hold_reason == "read-only organization"  # no reason given
    assert visits(conn, 1) == [(0, ROWS)] and bbo.list_jobs(operation.id) == []


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        (RuntimeError("the directory is down"), "raised RuntimeError: the directory is down"),
        (1, "must answer False/None (writable), True or a reason string"),
    ],
)
def test_a_failing_check_counts_as_read_only_and_is_logged(
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
    caplog: pytest.LogCaptureFixture,
    answer: Any,
    logged: str,
) -> None:
    def check(database_name: str, organization_id: int) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    bbo.configure(dsn=configured, organization_read_only=check)
    operation = visiting(conn, define_operation)(**organization())
    returned = bbo.run_to_completion(operation.id)
    assert returned.status == OperationStatus.QUEUED and visits(conn, 1) == [(0, ROWS)]
    assert returned.hold_reason is not None and logged in returned.hold_reason
    failures = [r for r in caplog.records if "read_only_check_failed" in r.getMessage()]
    assert failures and logged in failures[0].getMessage()


def test_configure_refuses_a_check_that_cannot_take_its_two_arguments(configured: str) -> None:
    with pytest.raises(bbo.errors.ConfigurationError, match="organization_read_only"):
        bbo.configure(dsn=configured, organization_read_only=lambda organization_id: False)
    with pytest.raises(bbo.errors.ConfigurationError, match="organization_read_only"):
        bbo.configure(dsn=configured, organization_read_only="yes")
