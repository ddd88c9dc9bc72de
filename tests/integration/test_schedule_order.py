"""The dispatch order (dramatiq_bbo.pipeline.picking) on a real Postgres, and the
``next_run_at`` it reads staying right through every change of the columns it depends on.

Operations are enqueued for real (no broker: nothing runs behind the test's back); how long
each has been due is set on its row (created a day ago, last run N seconds ago, interval 0),
because waiting for real time to pass would make the tests slow.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.pipeline.handoff import take_lease
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from dramatiq_bbo.pipeline.picking import pick_schedulable
from dramatiq_bbo.queries import query
from dramatiq_bbo.state.store import hold_operation, tables_for
from tests.integration.pipeline_support import no_broker, run_one_job
from tests.integration.steering_support import Visit, make_counters

pytestmark = pytest.mark.usefixtures("no_broker")
__all__ = ["no_broker"]  # the fixture, re-exported for pytest

_numbers = iter(range(1_000_000))


@pytest.fixture
def counters(configured: str, conn: psycopg.Connection[Any]) -> Iterator[None]:
    make_counters(conn, 10)
    yield


def org(priority: int = 0, **sizes: Any) -> Any:
    """A new organization-scoped operation's id."""
    return bbo.enqueue(
        Visit, "counters", "id", arguments={"n": next(_numbers)}, organization_id=1,
        user_id=1, priority=priority, **sizes,
    ).operation.id  # fmt: skip


def cell(priority: int = 0, **sizes: Any) -> Any:
    """A new cell-local operation's id."""
    return bbo.enqueue(
        Visit, "counters", "id", arguments={"n": next(_numbers)}, priority=priority, **sizes
    ).operation.id


def table(conn: psycopg.Connection[Any], operation_id: Any) -> str:
    operations, _ = tables_for(operation_id)
    return operations.as_string(conn)


def due_for(conn: psycopg.Connection[Any], operation_id: Any, seconds: float) -> None:
    """Make the operation due since ``seconds`` ago (negative: due in the future)."""
    conn.execute(
        f"UPDATE {table(conn, operation_id)} SET created_at = now() - interval '1 day',"
        " last_run_at = now() - make_interval(secs => %s), interval_seconds = 0 WHERE id = %s",
        [seconds, operation_id],
    )


def release_lease(
    conn: psycopg.Connection[Any], operation_id: Any, token: str | None = None
) -> None:
    """Clear the operation's stage lease (this token's, or whoever's)."""
    operations, _ = tables_for(operation_id)
    conn.execute(
        query("pipeline_release_operation", operations=operations),
        {"partition": 1, "id": operation_id, "token": token},
    )


def row(conn: psycopg.Connection[Any], operation_id: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        found = cur.execute(
            f"SELECT *, now() AS now FROM {table(conn, operation_id)} WHERE id = %s",
            [operation_id],
        ).fetchone()
    assert found is not None
    return found


def picked(limit: int = 10, **options: Any) -> list[Any]:
    """The ids pick_schedulable chooses, in order (the transaction rolls back: nothing kept)."""
    with REGISTRY.connection("main") as conn, conn.transaction(force_rollback=True):
        return [p.id for p in pick_schedulable(conn, "main", limit, **options)]


def expected_next_run_at(found: dict[str, Any]) -> datetime.datetime:
    """next_run_at as schema 0009 defines it, computed here from the row's own columns."""
    interval = datetime.timedelta(seconds=found["interval_seconds"])
    ends = [found["created_at"], found["on_hold_until"], found["lease_expires_at"]]
    ends.append(found["last_run_at"] + interval if found["last_run_at"] else None)
    return max(end for end in ends if end is not None)


def assert_next_run_at_right(conn: psycopg.Connection[Any], operation_id: Any) -> dict[str, Any]:
    found = row(conn, operation_id)
    assert found["next_run_at"] == expected_next_run_at(found)
    return found


# -- the order -------------------------------------------------------------------------------


def test_organization_operations_come_before_cell_local_ones(
    counters: None, conn: psycopg.Connection[Any]
) -> None:
    local, user = cell(), org()
    due_for(conn, local, 50)  # due longer, but below max_wait_seconds (60 s)
    due_for(conn, user, 1)

    assert picked() == [user, local]
    assert picked(1) == [user]


def test_a_cell_local_operation_due_past_max_wait_comes_before_organization_ones(
    counters: None, configured: str, conn: psycopg.Connection[Any]
) -> None:
    aged, fresh, user = cell(), cell(), org()
    due_for(conn, aged, 90)
    due_for(conn, fresh, 30)
    due_for(conn, user, 3_600)  # waiting longer still: ageing is for cell-local work only

    assert picked() == [aged, user, fresh]
    assert picked(max_wait_seconds=110) == [user, aged, fresh]
    # served first from 90% of the bound on, so that it is served within it
    assert picked(max_wait_seconds=95) == [aged, user, fresh]
    bbo.configure(dsn=configured, max_wait_seconds=20)
    assert picked() == [aged, fresh, user]


def test_priority_comes_first_within_a_scope_then_the_one_due_longest(
    counters: None, conn: psycopg.Connection[Any]
) -> None:
    low, high, middle, negative = org(priority=0), org(priority=7), org(priority=3), org(-2)
    high_later, local_high, local_low = org(priority=7), cell(priority=9), cell(priority=1)
    for operation_id, seconds in (
        (low, 500), (high, 5), (middle, 50), (negative, 900), (high_later, 20),
        (local_high, 1), (local_low, 40),
    ):  # fmt: skip
        due_for(conn, operation_id, seconds)

    assert picked() == [high_later, high, middle, low, negative, local_high, local_low]
    assert picked(3) == [high_later, high, middle]


def test_the_one_due_longest_first_and_one_that_just_ran_goes_last(
    counters: None, conn: psycopg.Connection[Any]
) -> None:
    first, second, third = org(), org(), org()
    due_for(conn, first, 10)
    due_for(conn, second, 300)
    due_for(conn, third, 50)
    assert picked() == [second, third, first]

    # second runs a job: due again one interval (0 s here) after it started, behind the others
    conn.execute(f"UPDATE {table(conn, second)} SET last_run_at = now() WHERE id = %s", [second])
    assert picked() == [third, first, second]


def test_exclude_is_applied_before_the_limit(counters: None, conn: psycopg.Connection[Any]) -> None:
    first, second, third = org(), org(), org()
    local = cell()
    for operation_id, seconds in ((first, 30), (second, 20), (third, 10), (local, 5)):
        due_for(conn, operation_id, seconds)

    assert picked(2, exclude=first) == [second, third]
    assert picked(2, exclude=str(first).upper()) == [second, third]
    assert picked(3, exclude=[second, local]) == [first, third]
    assert picked(10, exclude=str(local)) == [first, second, third]
    assert picked(10, exclude=uuid.uuid4()) == [first, second, third, local]


def test_rows_locked_elsewhere_are_skipped_and_only_the_chosen_rows_are_locked(
    counters: None, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    first, second, third = org(), org(), org()
    for operation_id, seconds in ((first, 30), (second, 20), (third, 10)):
        due_for(conn, operation_id, seconds)
    name = table(conn, first)

    with psycopg.connect(dsn) as other, other.transaction():
        other.execute(f"SELECT 1 FROM {name} WHERE id = %s FOR UPDATE", [first])
        assert picked(2) == [second, third]  # the locked one costs no place in the limit

    with REGISTRY.connection("main") as mine, mine.transaction(force_rollback=True):
        assert [p.id for p in pick_schedulable(mine, "main", 1)] == [first]
        with psycopg.connect(dsn) as other, other.transaction():
            other.execute("SET LOCAL lock_timeout = '1s'")
            for free in (second, third):  # not chosen, so not locked
                other.execute(f"SELECT 1 FROM {name} WHERE id = %s FOR UPDATE NOWAIT", [free])
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(f"SELECT 1 FROM {name} WHERE id = %s FOR UPDATE NOWAIT", [first])


def test_what_is_not_schedulable_is_never_picked(
    counters: None, conn: psycopg.Connection[Any]
) -> None:
    ready, later, paused, running = org(), org(), org(), org()
    for operation_id in (ready, later, paused, running):
        due_for(conn, operation_id, 30)
    due_for(conn, later, -30)  # its interval ends in 30 s
    bbo.pause(paused)
    assert orchestrate("main", running) == Decision.DISPATCHED  # a job waits for its runner
    release_lease(conn, running)  # so only the live job keeps it from being picked

    assert picked() == [ready]


def test_a_scheduler_pass_dispatches_in_this_order(
    counters: None, configured: str, conn: psycopg.Connection[Any]
) -> None:
    aged, fresh, user = cell(), cell(), org()
    due_for(conn, aged, 90)
    due_for(conn, fresh, 30)
    due_for(conn, user, 1)
    bbo.configure(dsn=configured, max_running_jobs=2)

    assert scheduler.tick("main").dispatched == [str(aged), str(user)]


# -- next_run_at kept right by every writer --------------------------------------------------


def test_next_run_at_follows_hold_pause_resume_interval_and_lease(
    counters: None, conn: psycopg.Connection[Any]
) -> None:
    operation_id = org()
    due_for(conn, operation_id, 30)
    assert (
        assert_next_run_at_right(conn, operation_id)["next_run_at"] < row(conn, operation_id)["now"]
    )
    assert picked() == [operation_id]

    record = bbo.get_operation(operation_id)
    with REGISTRY.connection("main") as c, c.transaction():
        until = hold_operation(c, record, seconds=600, reason="test: hold")
    found = assert_next_run_at_right(conn, operation_id)
    assert found["next_run_at"] == until
    assert picked() == []

    conn.execute(
        f"UPDATE {table(conn, operation_id)} SET on_hold_until = now() - interval '1 s'"
        " WHERE id = %s",
        [operation_id],
    )  # the hold ended
    assert_next_run_at_right(conn, operation_id)
    assert picked() == [operation_id]

    bbo.pause(operation_id)
    assert picked() == []
    resumed = bbo.resume(operation_id)
    assert resumed.last_run_at is None
    found = assert_next_run_at_right(conn, operation_id)
    assert found["next_run_at"] == found["on_hold_until"] < found["now"]  # the ended hold
    assert picked() == [operation_id]

    conn.execute(
        f"UPDATE {table(conn, operation_id)} SET last_run_at = now() WHERE id = %s",
        [operation_id],
    )
    bbo.update(operation_id, interval_seconds=3_600)
    found = assert_next_run_at_right(conn, operation_id)
    assert found["next_run_at"] == found["last_run_at"] + datetime.timedelta(hours=1)
    assert picked() == []
    bbo.update(operation_id, interval_seconds=0)
    assert_next_run_at_right(conn, operation_id)
    assert picked() == [operation_id]

    with REGISTRY.connection("main") as c, c.transaction():
        token = take_lease(c, record, delay=100)
    found = assert_next_run_at_right(conn, operation_id)
    assert found["lease_owner"] == token and found["next_run_at"] == found["lease_expires_at"]
    assert picked() == []
    release_lease(conn, operation_id, token)
    assert_next_run_at_right(conn, operation_id)
    assert picked() == [operation_id]


def test_next_run_at_after_a_job_is_one_interval_after_it_started(
    counters: None, conn: psycopg.Connection[Any]
) -> None:
    operation_id = cell(interval_seconds=600, batch_size=1_000, sub_batch_size=5)

    assert run_one_job(operation_id) is not None

    found = assert_next_run_at_right(conn, operation_id)  # the chained stage's lease
    assert found["next_run_at"] >= found["last_run_at"] + datetime.timedelta(seconds=600)
    release_lease(conn, operation_id)
    found = assert_next_run_at_right(conn, operation_id)
    assert found["next_run_at"] == found["last_run_at"] + datetime.timedelta(seconds=600)
    assert picked() == []


def test_next_run_at_does_not_depend_on_the_session_time_zone(
    counters: None, conn: psycopg.Connection[Any]
) -> None:
    operation_id = org()
    conn.execute("SET TimeZone = 'America/New_York'")
    conn.execute(
        f"UPDATE {table(conn, operation_id)} SET created_at = '2026-03-01 00:00+00',"
        " last_run_at = '2026-03-08 06:00+00', interval_seconds = 86400 WHERE id = %s",
        [operation_id],
    )  # across the switch to daylight saving time in New York (2026-03-08 07:00 UTC)
    found = row(conn, operation_id)

    assert found["next_run_at"] == datetime.datetime(2026, 3, 9, 6, 0, tzinfo=datetime.UTC)
