"""The sub-batch hot path: one bbo row written per sub-batch, the operation's counters rolled
up from its job, the session's timeouts put back after a walk, and the views whole meanwhile."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY, database_for
from dramatiq_bbo.jobs.run import run_job
from dramatiq_bbo.state.records import JobStatus

from .test_batching import enqueue, first_job, job_row, make_items

SEEN: list[tuple[int, int, int]] = []


def operation_counts(operation_id: Any) -> tuple[int, int]:
    """The operation row's own counters, and those the bbo.operations view shows."""
    with psycopg.connect(REGISTRY.get("main").dsn, autocommit=True) as conn:
        own = conn.execute(
            "SELECT processed_tuple_count FROM bbo.background_operation_workers_cell_local"
            " WHERE id = %s",
            [operation_id],
        ).fetchone()
        shown = conn.execute(
            "SELECT processed_tuple_count FROM bbo.operations WHERE id = %s", [str(operation_id)]
        ).fetchone()
    assert own is not None and shown is not None
    return int(own[0]), int(shown[0])


class Counting(bbo.BaseOperation):
    """Records, in each sub-batch, the operation row's counter and what the view shows."""

    name = "test_hot_path.counting"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            own, shown = operation_counts(self.operation.id)
            SEEN.append((own, shown, sub_batch.delete()))
            if self.arguments.get("fail_at") == len(SEEN):
                raise RuntimeError("boom")


def test_a_walk_writes_its_job_row_alone_and_rolls_its_counts_up_at_its_end(
    configured: str, conn
) -> None:
    SEEN.clear()
    make_items(conn, 60)
    operation = enqueue(Counting, batch_size=60, sub_batch_size=10)
    job = first_job(operation)

    outcome = run_job(operation.id, job.id)

    assert outcome.status == JobStatus.SUCCEEDED
    # six sub-batches well within a second: the operation row is not written until the end,
    # while the view adds the job's committed counts at every step
    assert [own for own, _, _ in SEEN] == [0] * 6
    assert [shown for _, shown, _ in SEEN] == [0, 10, 20, 30, 40, 50]
    assert operation_counts(operation.id) == (60, 60)
    row = job_row(conn, job.id)
    assert (row["processed_tuple_count"], row["unrolled_processed"]) == (60, 0)
    assert (row["affected_tuple_count"], row["unrolled_affected"]) == (60, 0)


def test_a_failed_walk_rolls_the_counts_it_left_up_at_the_end_of_its_job(
    configured: str, conn
) -> None:
    SEEN.clear()
    make_items(conn, 60)
    operation = enqueue(Counting, arguments={"fail_at": 4}, batch_size=60, sub_batch_size=10)
    job = first_job(operation)

    outcome = run_job(operation.id, job.id)

    assert outcome.status == JobStatus.FAILED
    assert operation_counts(operation.id) == (30, 30)  # three sub-batches committed
    row = job_row(conn, job.id)
    assert (row["processed_tuple_count"], row["unrolled_processed"]) == (30, 0)


def test_what_a_killed_runner_left_on_its_job_row_shows_in_the_views_and_rolls_up_later(
    configured: str, conn
) -> None:
    SEEN.clear()
    make_items(conn, 40)
    operation = enqueue(Counting, batch_size=40, sub_batch_size=10)
    job = first_job(operation)
    # as a runner killed after two sub-batches committed between two roll-ups leaves it
    conn.execute(
        "UPDATE bbo.background_operation_jobs_cell_local SET checkpoint_cursor = '[20]',"
        " processed_tuple_count = 20, affected_tuple_count = 20, unrolled_processed = 20,"
        " unrolled_affected = 20 WHERE id = %s",
        [job.id],
    )
    conn.execute("DELETE FROM items WHERE id <= 20")
    assert operation_counts(operation.id) == (0, 20)

    final = bbo.run_to_completion(operation.id)

    assert (final.processed_tuple_count, final.affected_tuple_count) == (40, 40)
    assert operation_counts(operation.id) == (40, 40)


def test_a_walk_puts_the_sessions_timeouts_back(configured: str, conn) -> None:
    SEEN.clear()
    make_items(conn, 30)
    operation = enqueue(Counting, batch_size=30, sub_batch_size=10)
    job = first_job(operation)
    database = database_for("main")
    before = database.execute_sql("SHOW statement_timeout").fetchone()[0]
    database.execute_sql("SET lock_timeout = '7s'")

    run_job(operation.id, job.id)

    after = database.connection().execute(
        "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
        " current_setting('idle_in_transaction_session_timeout'),"
        " current_setting('synchronous_commit')"
    )
    assert after.fetchone() == (before, "7s", "0", "on")
    assert bbo.get_operation(operation.id).processed_tuple_count == 30


MODES: list[str] = []


class PlanModes(bbo.BaseOperation):
    """Records the plan_cache_mode the author's statements run under, in each sub-batch."""

    name = "test_hot_path.plan_modes"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            MODES.append(
                sub_batch.execute("SELECT current_setting('plan_cache_mode')").fetchone()[0]
            )
            sub_batch.delete()


def test_the_authors_statements_run_under_the_sessions_plan_cache_mode(
    configured: str, conn
) -> None:
    MODES.clear()
    make_items(conn, 50)
    operation = enqueue(PlanModes, batch_size=50, sub_batch_size=10)
    job = first_job(operation)
    database_for("main").execute_sql("SET plan_cache_mode = force_custom_plan")

    run_job(operation.id, job.id)

    # the walk's own probes were planned generically in between, and put the mode back
    assert MODES == ["force_custom_plan"] * 5


def test_the_walks_own_statements_are_planned_once_not_at_every_sub_batch(
    configured: str, conn
) -> None:
    MODES.clear()
    make_items(conn, 200)
    operation = enqueue(PlanModes, batch_size=200, sub_batch_size=10)
    job = first_job(operation)

    run_job(operation.id, job.id)

    # the walk ran on this thread's peewee connection: its prepared statements are there
    plans = (
        database_for("main")
        .connection()
        .execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        .fetchall()
    )
    checkpoint = [p for p in plans if "checkpoint_cursor =" in p[0]]
    probes = [p for p in plans if "bbo_first" in p[0]]
    assert checkpoint and probes, plans
    # the checkpoint runs in the application's mode (after the author's statements): Postgres
    # plans it afresh five times, then settles on its generic plan
    ((_, generic, custom),) = checkpoint
    assert (generic, custom) == (15, 5)
    # the first sub-batch's probe (no checkpoint yet), then the other nineteen
    assert sorted((generic, custom) for _, generic, custom in probes) == [(1, 0), (19, 0)]


COMMITS: list[str] = []


class CommitModes(bbo.BaseOperation):
    """Records the synchronous_commit each sub-batch commits under."""

    name = "test_hot_path.commit_modes"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            COMMITS.append(
                sub_batch.execute("SELECT current_setting('synchronous_commit')").fetchone()[0]
            )
            sub_batch.delete()


@pytest.mark.parametrize(("configured_mode", "seen"), [(None, "off"), ("on", "on")])
def test_sub_batches_commit_under_the_configured_synchronous_commit(
    dsn: str, conn, configured_mode: str | None, seen: str
) -> None:
    COMMITS.clear()
    options = {} if configured_mode is None else {"sub_batch_synchronous_commit": configured_mode}
    bbo.configure(dsn=dsn, **options)
    try:
        make_items(conn, 30)
        operation = enqueue(CommitModes, batch_size=30, sub_batch_size=10)
        run_job(operation.id, first_job(operation).id)
        assert COMMITS == [seen] * 3
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    finally:
        bbo.reset()


def test_an_unknown_synchronous_commit_is_refused(dsn: str) -> None:
    with pytest.raises(bbo.errors.ConfigurationError, match="sub_batch_synchronous_commit"):
        bbo.configure(dsn=dsn, sub_batch_synchronous_commit="maybe")


def test_one_transaction_commits_the_block_and_rolls_it_back_on_any_error(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    """The bookkeeping's one-round-trip transactions (BEGIN and COMMIT queued with the block):
    they commit what the block queued, roll back on a failed statement or an exception,
    and never commit a caller's open transaction."""
    from dramatiq_bbo.walk.statements import one_transaction

    conn.execute("CREATE TABLE one_tx (id int PRIMARY KEY)")
    dsn = REGISTRY.get("main").dsn
    with psycopg.connect(dsn, autocommit=True) as own:
        with one_transaction(own):
            own.execute("INSERT INTO one_tx VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation), one_transaction(own):
            own.execute("INSERT INTO one_tx VALUES (2)")
            own.execute("INSERT INTO one_tx VALUES (1)")
        with pytest.raises(RuntimeError), one_transaction(own):
            own.execute("INSERT INTO one_tx VALUES (3)")
            raise RuntimeError("the block gave up")
        assert own.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with psycopg.connect(dsn) as caller:  # not autocommit: its transaction is the caller's
        caller.execute("INSERT INTO one_tx VALUES (4)")
        with one_transaction(caller):
            caller.execute("INSERT INTO one_tx VALUES (5)")
        caller.rollback()
    with psycopg.connect(dsn, autocommit=True) as caller, caller.transaction():
        caller.execute("INSERT INTO one_tx VALUES (6)")
        with pytest.raises(psycopg.errors.UniqueViolation), one_transaction(caller):
            caller.execute("INSERT INTO one_tx VALUES (7)")  # a savepoint: only it is undone
            caller.execute("INSERT INTO one_tx VALUES (6)")
        with one_transaction(caller):
            caller.execute("INSERT INTO one_tx VALUES (8)")
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    rows = conn.execute("SELECT id FROM one_tx ORDER BY id").fetchall()
    assert rows == [(1,), (6,), (8,)]


def test_a_gated_claim_asks_its_gate_with_the_operation_locked_and_claims_nothing_on_no(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    from dramatiq_bbo.jobs.claims import ClaimGivenUp, claim

    make_items(conn, 20)
    operation = enqueue(Counting, batch_size=20, sub_batch_size=10)
    job = first_job(operation)
    seen: list[tuple[Any, bool]] = []

    def gate(gate_conn: psycopg.Connection[Any], locked: Any) -> bool:
        with psycopg.connect(REGISTRY.get("main").dsn, autocommit=True) as other:
            other.execute("SET lock_timeout = '50ms'")
            try:
                other.execute(
                    "SELECT 1 FROM bbo.background_operation_workers_cell_local"
                    " WHERE id = %s FOR UPDATE",
                    [locked.id],
                )
                free = True
            except psycopg.errors.LockNotAvailable:
                free = False
        seen.append((locked.id, free))
        gate_conn.execute(
            "UPDATE bbo.background_operation_workers_cell_local SET hold_reason = 'gate'"
            " WHERE id = %s",
            [locked.id],
        )
        return True

    def no_gate(gate_conn: psycopg.Connection[Any], locked: Any) -> bool:
        return False

    with REGISTRY.connection() as bookkeeping_conn:
        with pytest.raises(ClaimGivenUp):
            claim(bookkeeping_conn, "main", operation.id, job.id, "runner-1", gate=gate)
        assert seen == [(operation.id, False)]  # asked with the operation row locked
        assert bbo.get_operation(operation.id).hold_reason == "gate"  # what it wrote commits
        row = job_row(conn, job.id)
        assert (row["status"], row["attempts"], row["lease_owner"]) == (0, 0, None)

        claimed = claim(bookkeeping_conn, "main", operation.id, job.id, "runner-1", gate=no_gate)
    assert (claimed.job.status, claimed.job.attempts) == (JobStatus.RUNNING, 1)
    assert claimed.table_oid is not None  # the table's identity read in the same trips
