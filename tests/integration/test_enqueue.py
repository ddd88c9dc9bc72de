"""enqueue() stores what an operation needs to run, finds unfinished duplicates in any
partition even under a race, and commits with the caller's transaction when given one."""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from playhouse.postgres_ext import Psycopg3Database
from psycopg import sql
from psycopg_pool import ConnectionPool

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from dramatiq_bbo.logs import DUPLICATE_ENQUEUE, WORKER_TRANSITION
from dramatiq_bbo.pipeline.runtime import Runtime, installed
from dramatiq_bbo.walk.catalog import cursor_casts, resolve_table
from tests.integration.enqueue_support import define_operation, make_todos, operation_rows

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

# The module, not the function of the same name that ``dramatiq_bbo`` exports.
enqueue_module = importlib.import_module("dramatiq_bbo.enqueueing.api")

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def todos(conn: psycopg.Connection[Any]) -> str:
    make_todos(conn, 1000)
    return "todos"


class RecordEnqueues(bbo.Middleware):
    def __init__(self) -> None:
        self.calls: list[bbo.OperationRecord] = []

    def after_enqueue(self, operation: bbo.OperationRecord) -> None:
        self.calls.append(operation)


@pytest.fixture
def hook_calls() -> Any:
    """The operations a middleware's ``after_enqueue`` was called with (no broker)."""
    recorder = RecordEnqueues()
    with installed(Runtime(middleware=(recorder,))):
        yield recorder.calls


def bbo_events(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    return [r.bbo for r in caplog.records if getattr(r, "bbo", {}).get("message") == message]


# -- what is stored ----------------------------------------------------------------------------
def test_enqueue_stores_range_estimate_and_class_defaults(conn, todos, define_operation):
    op = define_operation(batch_size=500, sub_batch_size=50, interval_seconds=30)
    result = bbo.enqueue(op, todos, "id", arguments={"done": True})
    assert result.duplicate is False
    stored = result.operation
    assert isinstance(stored.id, int)
    assert stored.status == bbo.OperationStatus.QUEUED
    assert (stored.job_class_name, stored.table_schema, stored.table_name) == (
        op.name,
        "public",
        "todos",
    )
    assert stored.column_name == "id"
    assert stored.table_oid == conn.execute("SELECT 'public.todos'::regclass::oid").fetchone()[0]
    assert stored.cursor_columns == ("id",)
    assert stored.job_arguments == {"done": True}
    assert stored.database_name == "main"
    assert (stored.min_cursor, stored.max_cursor, stored.next_cursor) == ([10], [10000], None)
    assert stored.total_tuple_count == 1000  # reltuples after ANALYZE
    assert (stored.batch_size, stored.sub_batch_size, stored.interval_seconds) == (500, 50, 30.0)
    assert (stored.pause_ms, stored.min_batch_size, stored.max_batch_size) == (
        100,
        1_000,
        2_000_000,
    )  # from the settings
    assert stored.processed_tuple_count == 0 and stored.partition == 1
    assert bbo.get_operation(stored.id) == stored


def test_enqueue_overrides_class_defaults(conn, todos, define_operation):
    op = define_operation(batch_size=500, sub_batch_size=50, pause_ms=7)
    stored = bbo.enqueue(
        op,
        todos,
        "id",
        batch_size=2000,
        sub_batch_size=250,
        pause_ms=0,
        interval_seconds=0,
        min_batch_size=10,
        max_batch_size=20_000,
        priority=5,
    ).operation
    assert (stored.batch_size, stored.sub_batch_size, stored.pause_ms) == (2000, 250, 0)
    assert (stored.interval_seconds, stored.min_batch_size, stored.max_batch_size) == (
        0.0,
        10,
        20_000,
    )
    assert stored.priority == 5


def test_enqueue_without_analyze_has_no_estimate(conn, define_operation):
    make_todos(conn, 10, analyze=False)
    assert bbo.enqueue(define_operation(), "todos", "id").operation.total_tuple_count is None


def test_enqueue_estimates_partitioned_tables_from_their_leaves(conn, define_operation):
    conn.execute(
        "CREATE TABLE measures (partition_id int NOT NULL, id bigint NOT NULL,"
        " PRIMARY KEY (partition_id, id)) PARTITION BY LIST (partition_id)"
    )
    for part in (1, 2):
        conn.execute(f"CREATE TABLE measures_{part} PARTITION OF measures FOR VALUES IN ({part})")
    conn.execute("INSERT INTO measures SELECT 1 + g % 2, g FROM generate_series(1, 300) AS g")
    conn.execute("ANALYZE measures")
    op = define_operation(cursor=("partition_id", "id"))
    stored = bbo.enqueue(op, "measures", "id").operation
    assert stored.total_tuple_count == 300
    assert (stored.min_cursor, stored.max_cursor) == ([1, 2], [2, 299])


def test_enqueue_of_an_empty_table_has_no_max_cursor(conn, define_operation):
    make_todos(conn, 0)
    stored = bbo.enqueue(define_operation(), "todos", "id").operation
    assert (stored.min_cursor, stored.max_cursor) == ([], None)


def test_enqueue_range_honours_the_class_scope(conn, todos, define_operation):
    def scope(self, query):
        return query.where(self.table.user_id == self.arguments["user_id"])

    op = define_operation(scope=scope)
    stored = bbo.enqueue(op, todos, "id", arguments={"user_id": 3}).operation
    # user_id = g % 5 = 3 for g = 3, 8, ..., 998 → ids 30 ... 9980
    assert (stored.min_cursor, stored.max_cursor) == ([30], [9980])


def test_enqueue_cursor_values_cast_back_to_their_column_types(conn, define_operation):
    conn.execute(
        "CREATE TABLE visits (at timestamptz NOT NULL, id bigint NOT NULL, PRIMARY KEY (at, id))"
    )
    conn.execute(
        "INSERT INTO visits SELECT timestamptz '2024-01-01 00:00:00.123456+02' + g * interval"
        " '1 hour', g FROM generate_series(1, 48) AS g"
    )
    op = define_operation(cursor=("at", "id"))
    stored = bbo.enqueue(op, "visits", "id").operation
    assert all(isinstance(value, str) for value in stored.max_cursor[:1])
    table = resolve_table(conn, "visits")
    for bound, expected in ((stored.min_cursor, 1), (stored.max_cursor, 48)):
        query = sql.SQL("SELECT count(*) FROM visits WHERE (at, id) <= {}").format(
            cursor_casts(table, ("at", "id"))
        )
        assert conn.execute(query, bound).fetchone()[0] == expected


def test_enqueue_organization_scope_uses_the_organization_table(conn, todos, define_operation):
    stored = bbo.enqueue(define_operation(), todos, "id", organization_id=7, user_id=42).operation
    assert isinstance(stored.id, uuid.UUID)
    assert (stored.organization_id, stored.user_id) == (7, 42)
    row = conn.execute(
        "SELECT organization_id, user_id FROM bbo.background_operation_workers WHERE id = %s",
        [stored.id],
    ).fetchone()
    assert row == (7, 42)
    assert conn.execute(
        "SELECT count(*) FROM bbo.background_operation_workers_cell_local"
    ).fetchone() == (0,)
    assert bbo.get_operation(stored.id) == stored
    assert bbo.get_operation(str(stored.id)) == stored
    assert bbo.list_jobs(stored.id) == []


def test_enqueue_takes_the_scope_from_a_user(conn, todos, define_operation):
    user = SimpleNamespace(id=42, organization_id=7)
    stored = bbo.enqueue(define_operation(), todos, "id", user=user).operation
    assert (stored.organization_id, stored.user_id) == (7, 42)


def test_enqueue_by_registered_name(conn, todos, define_operation):
    op = define_operation()
    assert bbo.enqueue(op.name, todos, "id").operation.job_class_name == op.name


def test_get_operation_refuses_unknown_and_malformed_ids(conn, todos, define_operation):
    cell_local = bbo.enqueue(define_operation(), todos, "id").operation
    assert bbo.get_operation(str(cell_local.id)) == cell_local  # digits, as typed in a CLI
    for missing in (cell_local.id + 1, uuid.uuid4()):
        with pytest.raises(errors.OperationNotFound, match=str(missing)):
            bbo.get_operation(missing)
        with pytest.raises(errors.OperationNotFound, match=str(missing)):
            bbo.list_jobs(missing)
    for malformed in ("abc", 1.5, None, True):
        with pytest.raises(errors.InvalidOperationId, match=repr(malformed)):
            bbo.get_operation(malformed)


def test_enqueue_logs_the_transition_and_calls_hooks(
    conn, todos, define_operation, caplog, hook_calls
):
    caplog.set_level(logging.INFO, logger="dramatiq_bbo")
    op = define_operation()
    stored = bbo.enqueue(op, todos, "id").operation
    (logged,) = bbo_events(caplog, WORKER_TRANSITION)
    assert logged["previous_state"] is None and logged["new_state"] == "queued"
    assert (logged["job_class_name"], logged["table_schema"], logged["table_name"]) == (
        op.name,
        "public",
        "todos",
    )
    assert logged["column_name"] == "id"
    assert logged["operation_id"] == str(stored.id)
    assert hook_calls == [stored]
    bbo.enqueue(op, todos, "id")  # a duplicate wakes nobody
    assert hook_calls == [stored]


# -- duplicates --------------------------------------------------------------------------------
def test_enqueue_returns_the_unfinished_duplicate_with_a_warning(
    conn, todos, define_operation, caplog
):
    caplog.set_level(logging.INFO, logger="dramatiq_bbo")
    op = define_operation()
    first = bbo.enqueue(op, todos, "id", arguments={"a": 1, "b": [1, 2]})
    second = bbo.enqueue(op, "public.todos", "id", arguments={"b": [1, 2], "a": 1})
    assert second.duplicate is True
    assert second.operation.id == first.operation.id
    (warning,) = bbo_events(caplog, DUPLICATE_ENQUEUE)
    assert warning["operation_id"] == str(first.operation.id)
    assert [
        r.levelno
        for r in caplog.records
        if getattr(r, "bbo", {}).get("message") == DUPLICATE_ENQUEUE
    ] == [logging.WARNING]
    assert operation_rows(conn) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"arguments": {"a": 2}},
        {"organization_id": 8, "user_id": 42},
        {"organization_id": 7, "user_id": 42, "arguments": {"a": 2}},
    ],
)
def test_enqueue_with_another_configuration_is_a_new_operation(
    conn, todos, define_operation, change
):
    op = define_operation()
    first = bbo.enqueue(op, todos, "id", arguments={"a": 1}, organization_id=7, user_id=42)
    second = bbo.enqueue(op, todos, "id", **{"arguments": {"a": 1}, **change})
    assert second.duplicate is False
    assert second.operation.id != first.operation.id


def test_enqueue_of_another_user_in_the_organization_is_a_duplicate(conn, todos, define_operation):
    op = define_operation()
    first = bbo.enqueue(op, todos, "id", organization_id=7, user_id=42)
    second = bbo.enqueue(op, todos, "id", organization_id=7, user_id=43)
    assert (second.duplicate, second.operation.id) == (True, first.operation.id)


@pytest.mark.parametrize(
    ("status", "blocks"), [(1, True), (2, True), (3, False), (4, False), (5, False)]
)
def test_only_unfinished_operations_block_a_new_one(conn, todos, define_operation, status, blocks):
    op = define_operation()
    first = bbo.enqueue(op, todos, "id").operation
    conn.execute(
        "UPDATE bbo.background_operation_workers_cell_local SET status = %s WHERE id = %s",
        [status, first.id],
    )
    second = bbo.enqueue(op, todos, "id")
    assert second.duplicate is blocks
    assert (second.operation.id == first.id) is blocks


@pytest.mark.parametrize("scope", [{}, {"organization_id": 7, "user_id": 42}])
def test_duplicate_detection_spans_partitions(conn, todos, define_operation, scope):
    op = define_operation()
    first = bbo.enqueue(op, todos, "id", **scope).operation
    table = "background_operation_workers" + ("" if scope else "_cell_local")
    conn.execute(
        sql.SQL("CREATE TABLE bbo.{} PARTITION OF bbo.{} FOR VALUES IN (2)").format(
            sql.Identifier(f"{table}_2"), sql.Identifier(table)
        )
    )
    conn.execute(
        sql.SQL("UPDATE bbo.{} SET partition = 2 WHERE id = %s").format(sql.Identifier(table)),
        [first.id],
    )
    # New operations go to partition 1, whose slice of the unique index does not hold the row.
    second = bbo.enqueue(op, todos, "id", **scope)
    assert (second.duplicate, second.operation.id, second.operation.partition) == (
        True,
        first.id,
        2,
    )
    assert operation_rows(conn) == 1


def _connection_budget(conn: psycopg.Connection[Any]) -> int:
    """Connections the race may open without starving the (shared) server: what is free
    minus a margin for other tests and sessions, at most 100."""
    limit = int(conn.execute("SHOW max_connections").fetchone()[0])
    used = int(conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0])
    return max(4, min(100, limit - used - 25))


def test_a_hundred_racing_enqueues_create_one_operation(conn, todos, define_operation):
    """100 threads call enqueue at the same instant (a barrier releases them together). Each
    uses its own connection when the server has room for 100; on a shared server with fewer
    free slots they share a pool sized to what is free, queueing for a connection as well as
    on the advisory lock. Either way, calls overlap and exactly one row is created."""
    op = define_operation()
    threads = 100
    budget = _connection_budget(conn)
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    in_flight = 0
    most_in_flight = 0
    counter = threading.Lock()

    def race(index: int) -> None:
        nonlocal in_flight, most_in_flight
        barrier.wait()
        with counter:
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
        try:
            with pool.connection() as own:
                results[index] = bbo.enqueue(op, todos, "id", arguments={"x": 1}, connection=own)
        except BaseException as exc:  # reported below, with the others
            results[index] = exc
        finally:
            with counter:
                in_flight -= 1

    with ConnectionPool(
        conn.info.dsn, min_size=budget, max_size=budget, kwargs={"autocommit": True}, timeout=120
    ) as pool:
        pool.wait(timeout=60)
        workers = [threading.Thread(target=race, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    failures = [r for r in results if not isinstance(r, enqueue_module.EnqueueResult)]
    assert failures == []
    assert most_in_flight > 1
    assert len({r.operation.id for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * (threads - 1)
    assert operation_rows(conn) == 1


# -- the caller's transaction ------------------------------------------------------------------
def test_enqueue_in_a_caller_transaction_that_rolls_back_leaves_nothing(
    configured, conn, todos, define_operation, hook_calls
):
    with psycopg.connect(configured, autocommit=True) as caller:
        with caller.transaction(force_rollback=True):
            caller.execute("DELETE FROM todos WHERE id = 10")
            stored = bbo.enqueue(define_operation(), todos, "id", connection=caller).operation
            assert stored.min_cursor == [20]  # sees the caller's own uncommitted change
            assert operation_rows(conn) == 0  # invisible outside until the caller commits
    assert operation_rows(conn) == 0
    assert conn.execute("SELECT count(*) FROM todos WHERE id = 10").fetchone() == (1,)
    assert hook_calls == []


def test_enqueue_in_a_caller_transaction_that_commits_exists(
    configured, conn, todos, define_operation, hook_calls
):
    with psycopg.connect(configured, autocommit=True) as caller:
        with caller.transaction():
            stored = bbo.enqueue(define_operation(), todos, "id", connection=caller).operation
    assert bbo.get_operation(stored.id) == stored
    assert hook_calls == []  # not ours to announce: the scheduler's tick picks it up


def test_enqueue_on_a_non_autocommit_connection_joins_its_implicit_transaction(
    configured, conn, todos, define_operation
):
    with psycopg.connect(configured) as caller:
        bbo.enqueue(define_operation(), todos, "id", connection=caller)
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        caller.rollback()
    assert operation_rows(conn) == 0


def test_enqueue_on_an_idle_autocommit_connection_commits_by_itself(
    configured, conn, todos, define_operation, hook_calls
):
    with psycopg.connect(configured, autocommit=True) as caller:
        stored = bbo.enqueue(define_operation(), todos, "id", connection=caller).operation
    assert bbo.get_operation(stored.id) == stored
    assert hook_calls == [stored]


def _peewee_database(dsn: str) -> Psycopg3Database:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return Psycopg3Database(params.pop("dbname"), **params)


@pytest.mark.parametrize("commit", [False, True])
def test_enqueue_in_a_peewee_atomic_block_follows_it(
    configured, conn, todos, define_operation, commit
):
    database = _peewee_database(configured)
    op = define_operation()
    try:
        with database.atomic() as transaction:
            database.execute_sql("DELETE FROM todos WHERE id = 10")
            stored = bbo.enqueue(op, todos, "id", connection=database).operation
            assert stored.min_cursor == [20]
            if not commit:
                transaction.rollback()
    finally:
        database.close()
    assert operation_rows(conn) == (1 if commit else 0)
    if commit:
        assert bbo.get_operation(stored.id) == stored


def test_enqueue_in_a_stale_snapshot_refuses_a_hidden_duplicate_and_keeps_the_transaction(
    configured, conn, todos, define_operation
):
    """A REPEATABLE READ snapshot taken before a twin committed cannot see it; the partial
    unique index catches the insert, and the caller gets a typed error, with its transaction
    still usable (the attempt ran in a savepoint)."""
    op = define_operation()
    with psycopg.connect(configured, autocommit=True) as caller:
        caller.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with caller.transaction(force_rollback=True):
            caller.execute("SELECT count(*) FROM todos")  # the snapshot starts here
            twin = bbo.enqueue(op, todos, "id").operation  # commits on another connection
            with pytest.raises(errors.ConcurrentEnqueue, match=op.name):
                bbo.enqueue(op, todos, "id", connection=caller)
            assert caller.execute("SELECT count(*) FROM todos").fetchone() == (1000,)
    assert [bbo.get_operation(twin.id)] == [twin]
    assert operation_rows(conn) == 1
