"""Keyset bounds, the sub-batch API, and the sub-batch transaction with its checkpoint, on a
real Postgres. Operation classes are defined here with unique names and ``pause_ms=0``."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import peewee
import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus

import dramatiq_bbo as bbo
from dramatiq_bbo.contrib import models
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.errors import IncompleteJob, InvalidTransition, LeaseLost, SubBatchTimeout
from dramatiq_bbo.jobs.run import create_next_job, prepare_retry, run_job
from dramatiq_bbo.state.records import JobRecord, JobStatus, OperationRecord, OperationStatus
from dramatiq_bbo.walk.catalog import json_values
from dramatiq_bbo.walk.checkpoint import Keyset, next_batch_bounds, split_range
from dramatiq_bbo.walk.keyset import column_field
from dramatiq_bbo.walk.tables import table_info, table_model

SEEN: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def seen() -> Iterator[dict[str, Any]]:
    SEEN.clear()
    yield SEEN
    SEEN.clear()


# -- tables and helpers -------------------------------------------------------------------------
def make_items(conn: psycopg.Connection[Any], rows: int, *, step: int = 1) -> None:
    """``items``: ids step, 2·step, ... (gaps when step > 1); owner = id-th % 3; half done."""
    conn.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, owner int NOT NULL, done boolean NOT NULL,"
        " visits int NOT NULL DEFAULT 0)"
    )
    conn.execute("CREATE INDEX items_owner_id ON items (owner, id)")
    conn.execute(
        "INSERT INTO items (id, owner, done)"
        " SELECT g * %s, g %% 3, g %% 2 = 0 FROM generate_series(1, %s) AS g",
        [step, rows],
    )
    conn.execute("CREATE TABLE audit (first bigint, last bigint)")


def keyset_for(table: str, columns: list[str]) -> Keyset:
    info = table_info("main", table)
    model = table_model("main", info)
    return Keyset(model, columns, [info.columns[c].type_name for c in columns])


def enqueue(cls: type[bbo.BaseOperation], table: str = "items", **kwargs: Any) -> OperationRecord:
    kwargs.setdefault("pause_ms", 0)
    column = kwargs.pop("column", "id")
    return bbo.enqueue(cls, table, column, **kwargs).operation


def first_job(operation: OperationRecord) -> JobRecord:
    with REGISTRY.connection() as conn:
        job = create_next_job(conn, bbo.get_operation(operation.id))
    assert job is not None
    return job


def job_row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute(
        "SELECT * FROM bbo.background_operation_jobs_cell_local WHERE id = %s", [job_id]
    ).fetchone()
    assert row is not None
    return row


def ids(conn: psycopg.Connection[Any], where: str = "true") -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT id FROM items WHERE {where} ORDER BY id")]


def assert_thread_connection_idle() -> None:
    """The runner closed the sub-batch generator: no transaction left open on this thread."""
    database = models.database_for("main")
    assert not database.in_transaction()
    assert database.connection().info.transaction_status == TransactionStatus.IDLE


# -- keyset bounds -------------------------------------------------------------------------------
def test_next_batch_bounds_walk_a_single_column_cursor_with_gaps(configured: str, conn) -> None:
    make_items(conn, 100, step=3)  # ids 3, 6, ..., 300
    keyset = keyset_for("items", ["id"])

    def bounds(next_cursor: Any, batch_size: int = 10, max_cursor: Any = (300,)) -> Any:
        return next_batch_bounds(
            conn,
            keyset,
            min_cursor=[3],
            max_cursor=None if max_cursor is None else list(max_cursor),
            next_cursor=next_cursor,
            batch_size=batch_size,
        )

    assert bounds(None) == ([3], [30])
    assert bounds([30]) == ([33], [60])
    assert bounds([31]) == ([33], [60])  # a resume cursor between two rows
    assert bounds([290]) == ([291], [300])  # fewer rows left than a batch: the last one
    assert bounds([300]) is None
    assert bounds([140], max_cursor=(150,)) == ([141], [150])  # capped at max_cursor
    assert bounds(None, batch_size=1000) == ([3], [300])
    assert bounds(None, max_cursor=None) is None  # nothing existed at enqueue
    unbounded = next_batch_bounds(
        conn, keyset, min_cursor=None, max_cursor=[300], next_cursor=None, batch_size=10
    )
    assert unbounded == ([3], [30])  # no lower bound: from the first row


def test_next_batch_bounds_walk_a_composite_cursor_with_gaps_up_to_max_cursor(
    configured: str, conn
) -> None:
    conn.execute(
        "CREATE TABLE events (partition_id int NOT NULL, id bigint NOT NULL,"
        " PRIMARY KEY (partition_id, id))"
    )
    conn.execute(
        "INSERT INTO events SELECT p, i FROM generate_series(1, 3) AS p,"
        " generate_series(1, 20) AS i WHERE i % 4 <> 0"
    )
    everything = [list(r) for r in conn.execute("SELECT * FROM events ORDER BY 1, 2")]
    expected = [r for r in everything if tuple(r) <= (2, 19)]
    keyset = keyset_for("events", ["partition_id", "id"])
    walked: list[list[int]] = []
    next_cursor = None
    while (
        found := next_batch_bounds(
            conn,
            keyset,
            min_cursor=[1, 1],
            max_cursor=[2, 19],
            next_cursor=next_cursor,
            batch_size=7,
        )
    ) is not None:
        first, last = found
        batch = [r for r in everything if first <= r <= last]
        assert batch[0] == first and batch[-1] == last
        assert len(batch) == 7 or last == [2, 19]
        walked.extend(batch)
        next_cursor = last
    assert walked == expected


def test_uuid_and_timestamp_cursors_compare_as_their_column_types(configured: str, conn) -> None:
    conn.execute(
        "CREATE TABLE stamps (created_at timestamptz NOT NULL, id uuid NOT NULL,"
        " PRIMARY KEY (created_at, id))"
    )
    conn.execute(
        "INSERT INTO stamps SELECT timestamptz '2024-03-01 10:00:00.123456+05:30'"
        " + (g % 7) * interval '1 hour 1.000001 second', gen_random_uuid()"
        " FROM generate_series(1, 50) AS g"
    )
    rows = [json_values(r) for r in conn.execute("SELECT * FROM stamps ORDER BY 1, 2")]
    keyset = keyset_for("stamps", ["created_at", "id"])
    ranges = []
    next_cursor = None
    while (
        found := next_batch_bounds(
            conn,
            keyset,
            min_cursor=rows[0],
            max_cursor=rows[-1],
            next_cursor=next_cursor,
            batch_size=6,
        )
    ) is not None:
        ranges.append(found)
        next_cursor = found[1]
    assert ranges == [(rows[i], rows[min(i + 5, 49)]) for i in range(0, 50, 6)]


def test_split_range_cuts_the_rest_of_a_job_at_its_median_row(configured: str, conn) -> None:
    make_items(conn, 9, step=2)  # ids 2, 4, ..., 18
    keyset = keyset_for("items", ["id"])
    assert split_range(conn, keyset, min_cursor=[2], max_cursor=[18]) == (
        ([2], [8]),
        ([10], [18]),
    )
    assert split_range(conn, keyset, min_cursor=[2], max_cursor=[18], checkpoint=[6]) == (
        ([8], [12]),
        ([14], [18]),
    )
    assert split_range(conn, keyset, min_cursor=[18], max_cursor=[18]) is None


class Visit(bbo.BaseOperation):
    name = "test_batching.visit"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


def test_create_next_job_hands_out_consecutive_ranges_and_advances_next_cursor(
    configured: str, conn
) -> None:
    make_items(conn, 25, step=2)
    operation = enqueue(Visit, batch_size=10, sub_batch_size=5)
    with REGISTRY.connection() as pooled:
        jobs = []
        while (job := create_next_job(pooled, bbo.get_operation(operation.id))) is not None:
            jobs.append(job)
            assert bbo.get_operation(operation.id).next_cursor == job.max_cursor
    assert [(j.min_cursor, j.max_cursor) for j in jobs] == [
        ([2], [20]),
        ([22], [40]),
        ([42], [50]),
    ]
    assert {j.status for j in jobs} == {JobStatus.PENDING}
    assert {(j.batch_size, j.sub_batch_size, j.pause_ms) for j in jobs} == {(10, 5, 0)}


# -- the sub-batch API ---------------------------------------------------------------------------
class Tour(bbo.BaseOperation):
    """Every way to look at and change a sub-batch, within a scope (one owner)."""

    name = "test_batching.tour"
    pause_ms = 0

    def scope(self, query: Any) -> Any:
        return query.where(self.table.owner == self.arguments["owner"])

    def perform(self) -> None:
        table = self.table
        for sub_batch in self.each_sub_batch():
            SEEN.setdefault("ids", []).append(sub_batch.ids())
            SEEN.setdefault("rows", []).append([row.id for row in sub_batch])
            SEEN.setdefault("dicts", []).append([row["id"] for row in sub_batch.dicts()])
            SEEN.setdefault("sizes", []).append(len(sub_batch))
            SEEN.setdefault("bounds", []).append(sub_batch.bounds)
            backend = sub_batch.execute("SELECT pg_backend_pid(), txid_current()").fetchone()
            through_peewee = table.select(
                peewee.fn.pg_backend_pid(), peewee.fn.txid_current()
            ).tuples()[0]
            SEEN.setdefault("same_transaction", []).append(backend == through_peewee)
            SEEN.setdefault("in_transaction", []).append(
                sub_batch.connection.info.transaction_status == TransactionStatus.INTRANS
            )
            SEEN["deleted"] = SEEN.get("deleted", 0) + sub_batch.where(table.done == True).delete()  # noqa: E712
            SEEN["updated"] = SEEN.get("updated", 0) + sub_batch.update(visits=table.visits + 1)


def test_sub_batches_delete_update_and_read_only_their_scoped_rows(configured: str, conn) -> None:
    make_items(conn, 300, step=2)  # owner = (id/2) % 3
    scoped = ids(conn, "owner = 1")
    scoped_done = ids(conn, "owner = 1 AND done")
    operation = enqueue(Tour, arguments={"owner": 1}, batch_size=40, sub_batch_size=15)

    finished = bbo.run_to_completion(operation.id)

    walked = [i for chunk in SEEN["ids"] for i in chunk]
    assert walked == scoped
    assert SEEN["rows"] == SEEN["ids"] and SEEN["dicts"] == SEEN["ids"]
    assert max(SEEN["sizes"]) == 15
    assert [b for b in SEEN["bounds"]] == [(chunk[0], chunk[-1]) for chunk in SEEN["ids"]]
    assert all(SEEN["same_transaction"]) and all(SEEN["in_transaction"])
    assert SEEN["deleted"] == len(scoped_done)
    assert ids(conn, "owner = 1 AND done") == []
    assert ids(conn, "owner = 1 AND visits = 1") == sorted(set(scoped) - set(scoped_done))
    assert ids(conn, "owner <> 1 AND visits <> 0") == []
    assert len(ids(conn, "owner <> 1")) == 200
    assert finished.status == OperationStatus.FINISHED
    assert finished.processed_tuple_count == len(scoped)
    assert finished.affected_tuple_count == SEEN["deleted"] + SEEN["updated"]


class RawThenDelete(bbo.BaseOperation):
    """Raw SQL and a delete in each sub-batch; raises at sub-batch ``fail_at`` (first attempt)."""

    name = "test_batching.raw_then_delete"
    pause_ms = 0

    def perform(self) -> None:
        for index, sub_batch in enumerate(self.each_sub_batch()):
            first, last = sub_batch.bounds
            sub_batch.execute("INSERT INTO audit (first, last) VALUES (%s, %s)", (first, last))
            condition, params = sub_batch.range_condition()
            sub_batch.execute(
                sql.SQL("DELETE FROM items WHERE {}").format(condition),
                params,
                count_affected=True,
            )
            if self.job.attempts == 1 and index == self.arguments["fail_at"]:
                raise RuntimeError(f"boom at sub-batch {index}")


def test_raw_sql_and_a_delete_commit_or_roll_back_together_with_the_checkpoint(
    configured: str, conn
) -> None:
    make_items(conn, 100)
    operation = enqueue(RawThenDelete, arguments={"fail_at": 3}, batch_size=100, sub_batch_size=10)
    job = first_job(operation)

    outcome = run_job(operation.id, job.id)

    assert outcome.status == JobStatus.FAILED
    assert isinstance(outcome.exception, RuntimeError)
    assert_thread_connection_idle()
    # sub-batches 0..2 committed, both their audit row and their delete; sub-batch 3 neither
    assert conn.execute("SELECT first, last FROM audit ORDER BY first").fetchall() == [
        (1, 10),
        (11, 20),
        (21, 30),
    ]
    assert ids(conn) == list(range(31, 101))
    row = job_row(conn, job.id)
    assert row["checkpoint_cursor"] == [30]
    assert (row["processed_tuple_count"], row["affected_tuple_count"]) == (30, 30)
    assert row["exception_class"] == "RuntimeError"
    assert row["exception_message"] == "boom at sub-batch 3"
    assert row["metrics"]["sub_batches"] == 3
    assert bbo.get_operation(operation.id).processed_tuple_count == 30

    finished = bbo.run_to_completion(operation.id)  # retried from the checkpoint

    assert ids(conn) == []
    audit = conn.execute("SELECT first, last FROM audit ORDER BY first").fetchall()
    assert audit == [(i, i + 9) for i in range(1, 101, 10)]  # no sub-batch twice
    assert finished.status == OperationStatus.FINISHED
    assert (finished.processed_tuple_count, finished.affected_tuple_count) == (100, 100)
    assert job_row(conn, job.id)["attempts"] == 2


class Breaker(bbo.BaseOperation):
    name = "test_batching.breaker"
    pause_ms = 0

    def perform(self) -> None:
        for index, sub_batch in enumerate(self.each_sub_batch()):
            sub_batch.delete()
            if index == 1:
                break


def test_break_discards_the_current_sub_batch_and_fails_the_job_as_incomplete(
    configured: str, conn
) -> None:
    make_items(conn, 50)
    operation = enqueue(Breaker, batch_size=50, sub_batch_size=10)
    job = first_job(operation)

    outcome = run_job(operation.id, job.id)

    assert outcome.status == JobStatus.FAILED
    assert isinstance(outcome.exception, IncompleteJob)
    assert_thread_connection_idle()
    assert ids(conn) == list(range(11, 51))  # sub-batch 1 rolled back
    assert job_row(conn, job.id)["checkpoint_cursor"] == [10]


def test_a_stop_check_ends_the_job_at_a_checkpoint_without_using_an_attempt(
    configured: str, conn
) -> None:
    make_items(conn, 60)
    operation = enqueue(Visit, batch_size=60, sub_batch_size=10)
    job = first_job(operation)
    calls = []

    def stop_check() -> str | None:
        calls.append(1)
        return "time budget" if len(calls) == 2 else None

    outcome = run_job(operation.id, job.id, stop_check=stop_check)

    assert outcome.status == JobStatus.PENDING
    assert outcome.interrupted_reason == "time budget"
    row = job_row(conn, job.id)
    assert (row["status"], row["attempts"], row["checkpoint_cursor"]) == (0, 0, [20])
    assert ids(conn, "visits = 1") == list(range(1, 21))

    assert bbo.run_to_completion(operation.id).status == OperationStatus.FINISHED
    assert ids(conn, "visits = 1") == list(range(1, 61))


def test_a_runner_that_lost_its_lease_stops_before_its_next_sub_batch(
    configured: str, conn
) -> None:
    make_items(conn, 50)
    operation = enqueue(Visit, batch_size=50, sub_batch_size=10)
    job = first_job(operation)

    def taken_over() -> None:
        conn.execute(
            "UPDATE bbo.background_operation_jobs_cell_local SET lease_owner = 'other runner'"
            " WHERE id = %s",
            [job.id],
        )

    with pytest.raises(LeaseLost):
        run_job(operation.id, job.id, stop_check=taken_over)  # type: ignore[arg-type]

    assert_thread_connection_idle()
    assert ids(conn, "visits = 1") == list(range(1, 11))
    row = job_row(conn, job.id)
    assert (row["status"], row["lease_owner"], row["checkpoint_cursor"]) == (
        1,
        "other runner",
        [10],
    )
    with pytest.raises(InvalidTransition, match="live lease"):
        run_job(operation.id, job.id)


# -- timeouts ------------------------------------------------------------------------------------
class Sleeper(bbo.BaseOperation):
    name = "test_batching.sleeper"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.delete()
            if self.arguments["through"] == "raw":
                sub_batch.execute("SELECT pg_sleep(2)")
            else:
                self.table.select(peewee.fn.pg_sleep(2)).scalar()


@pytest.mark.parametrize("through", ["raw", "peewee"])
def test_statement_timeout_rolls_back_and_raises_sub_batch_timeout(
    configured: str, conn, through: str
) -> None:
    bbo.configure(dsn=configured, statement_timeout_ms=50)
    make_items(conn, 20)
    operation = enqueue(Sleeper, arguments={"through": through}, batch_size=20, sub_batch_size=10)
    job = first_job(operation)

    outcome = run_job(operation.id, job.id)

    assert outcome.status == JobStatus.FAILED and outcome.timed_out
    assert isinstance(outcome.exception, SubBatchTimeout)
    assert outcome.exception.kind == "statement_timeout"
    assert_thread_connection_idle()
    assert len(ids(conn)) == 20  # the delete rolled back with the sub-batch
    row = job_row(conn, job.id)
    assert row["exception_class"] == "dramatiq_bbo.errors.SubBatchTimeout"
    assert row["metrics"]["timeout_kind"] == "statement_timeout"
    with REGISTRY.connection() as pooled:
        retried = prepare_retry(pooled, operation, JobRecord.from_row(row))
    assert retried.sub_batch_size == 7  # 10 shrunk by 25%


class Deleter(bbo.BaseOperation):
    name = "test_batching.deleter"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.delete()


def test_lock_timeout_rolls_back_and_raises_sub_batch_timeout(configured: str, conn) -> None:
    bbo.configure(dsn=configured, lock_timeout_ms=100)
    make_items(conn, 30)
    operation = enqueue(Deleter, batch_size=30, sub_batch_size=10)
    job = first_job(operation)
    with psycopg.connect(configured) as locker:
        locker.execute("SELECT * FROM items WHERE id = 15 FOR UPDATE")

        outcome = run_job(operation.id, job.id)

        locker.rollback()
    assert isinstance(outcome.exception, SubBatchTimeout)
    assert outcome.exception.kind == "lock_timeout"
    assert_thread_connection_idle()
    assert ids(conn) == list(range(11, 31))  # sub-batch 0 committed, sub-batch 1 rolled back
    assert job_row(conn, job.id)["checkpoint_cursor"] == [10]


class SlowInTheMiddle(bbo.BaseOperation):
    """Visits rows; a sub-batch over ids 25..40 holding more than 4 rows times out."""

    name = "test_batching.slow_in_the_middle"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            first, last = sub_batch.bounds
            SEEN.setdefault("runs", []).append((self.job.id, self.job.sub_batch_size, first))
            sub_batch.update(visits=self.table.visits + 1)
            if first <= 40 and last >= 25 and len(sub_batch) > 4:
                sub_batch.execute("SELECT pg_sleep(5)")


def test_run_to_completion_splits_a_job_that_timed_out_on_its_last_attempt(
    configured: str, conn
) -> None:
    bbo.configure(dsn=configured, statement_timeout_ms=100)
    make_items(conn, 60)
    operation = enqueue(SlowInTheMiddle, batch_size=40, sub_batch_size=10)

    finished = bbo.run_to_completion(operation.id)

    jobs = {str(j.id): j for j in bbo.list_jobs(finished)}
    parent = next(iter(jobs.values()))
    assert (parent.status, parent.attempts, parent.checkpoint_cursor) == (JobStatus.FAILED, 3, [20])
    tries = [(size, first) for job_id, size, first in SEEN["runs"] if job_id == parent.id]
    assert tries == [(10, 1), (10, 11), (10, 21), (7, 21), (5, 21)]  # shrunk, then split
    halves = [jobs[child] for child in parent.metrics["split_into"]]
    assert [(h.min_cursor, h.max_cursor) for h in halves] == [([21], [30]), ([31], [40])]
    for half in halves:
        assert half.metrics["split_from"] == str(parent.id)
        assert (half.status, half.sub_batch_size) == (JobStatus.SUCCEEDED, 4)
    rest = [j for j in jobs.values() if j is not parent and j not in halves]
    assert [(j.min_cursor, j.max_cursor, j.status) for j in rest] == [
        ([41], [60], JobStatus.SUCCEEDED)
    ]
    assert finished.status == OperationStatus.FINISHED  # the halves did the parent's work
    assert finished.processed_tuple_count == 60
    assert ids(conn, "visits = 1") == list(range(1, 61))  # every row exactly once


# -- target table models ---------------------------------------------------------------------------
class RegionalCleanup(bbo.BaseOperation):
    name = "test_batching.regional_cleanup"
    cursor = ("Region", "OrderId")
    pause_ms = 0

    def perform(self) -> None:
        amount = column_field(self.table, "Amount")
        for sub_batch in self.each_sub_batch():
            sub_batch.where(amount > 10).delete()


def test_a_mixed_case_schema_qualified_table_with_a_composite_key_is_reflected_and_walked(
    configured: str, conn
) -> None:
    conn.execute('CREATE SCHEMA "Sales"')
    conn.execute('CREATE TABLE "Sales"."Regions" ("Code" text PRIMARY KEY)')
    conn.execute(
        'CREATE TABLE "Sales"."Orders" ("Region" text NOT NULL REFERENCES "Sales"."Regions",'
        ' "OrderId" bigint NOT NULL, "Amount" int NOT NULL, PRIMARY KEY ("Region", "OrderId"))'
    )
    conn.execute("""INSERT INTO "Sales"."Regions" VALUES ('EU'), ('US')""")
    conn.execute(
        """INSERT INTO "Sales"."Orders" SELECT r, g * 5, g % 20
           FROM unnest(ARRAY['EU', 'US']) AS r, generate_series(1, 40) AS g"""
    )
    model = table_model("main", "Sales.Orders")
    assert (model._meta.schema, model._meta.table_name) == ("Sales", "Orders")
    assert isinstance(model._meta.primary_key, peewee.CompositeKey)
    assert not isinstance(column_field(model, "Region"), peewee.ForeignKeyField)
    assert table_model("main", '"Sales"."Orders"') is model  # cached

    operation = enqueue(
        RegionalCleanup, "Sales.Orders", column="OrderId", batch_size=15, sub_batch_size=4
    )
    finished = bbo.run_to_completion(operation.id)

    assert finished.status == OperationStatus.FINISHED
    assert finished.processed_tuple_count == 80
    left = conn.execute('SELECT count(*), max("Amount") FROM "Sales"."Orders"').fetchone()
    assert left == (44, 10)


def test_an_operation_walks_a_uuid_key(configured: str, conn) -> None:
    conn.execute(
        "CREATE TABLE docs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
        " visits int NOT NULL DEFAULT 0)"
    )
    conn.execute("INSERT INTO docs SELECT FROM generate_series(1, 77)")
    operation = enqueue(Visit, "docs", batch_size=20, sub_batch_size=6)
    assert bbo.run_to_completion(operation.id).processed_tuple_count == 77
    assert conn.execute("SELECT array_agg(DISTINCT visits) FROM docs").fetchone() == ([1],)


class Item(peewee.Model):
    id = peewee.BigIntegerField(primary_key=True)
    done = peewee.BooleanField()
    visits = peewee.IntegerField()

    class Meta:
        database = models.database_proxy  # the application binds its model to our database
        table_name = "items"


class OwnModel(bbo.BaseOperation):
    name = "test_batching.own_model"
    model = Item
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.where(Item.done == True).update(visits=Item.visits + 1)  # noqa: E712


def test_an_operation_class_may_bring_its_own_model(configured: str, conn) -> None:
    make_items(conn, 40)
    assert table_model("main", "items", operation_class=OwnModel) is Item
    operation = enqueue(OwnModel, batch_size=20, sub_batch_size=5)
    assert bbo.run_to_completion(operation.id).affected_tuple_count == 20
    assert ids(conn, "visits = 1") == ids(conn, "done")


class Owner(peewee.Model):
    id = peewee.IntegerField(primary_key=True)
    active = peewee.BooleanField()

    class Meta:
        database = models.database_proxy
        table_name = "owners"


class ActiveOwnersOnly(bbo.BaseOperation):
    """A scope with a join: only the items of active owners."""

    name = "test_batching.active_owners_only"
    pause_ms = 0

    def scope(self, query: Any) -> Any:
        on = self.table.owner == Owner.id
        return query.join(Owner, on=on).where(Owner.active == True)  # noqa: E712

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            SEEN.setdefault("ids", []).extend(sub_batch.ids())
            sub_batch.delete()


def test_a_scope_with_a_join_walks_and_deletes_only_the_joined_rows(configured: str, conn) -> None:
    make_items(conn, 90)  # owner = id % 3
    conn.execute("CREATE TABLE owners (id int PRIMARY KEY, active boolean NOT NULL)")
    conn.execute("INSERT INTO owners VALUES (0, true), (1, false), (2, true)")
    expected = ids(conn, "owner IN (0, 2)")
    operation = enqueue(ActiveOwnersOnly, batch_size=25, sub_batch_size=7)

    finished = bbo.run_to_completion(operation.id)

    assert SEEN["ids"] == expected
    assert ids(conn) == ids(conn, "owner = 1") and len(ids(conn)) == 30
    assert (finished.processed_tuple_count, finished.affected_tuple_count) == (60, 60)


def test_timestamps_in_arguments_filter_sub_batches(configured: str, conn) -> None:
    conn.execute(
        "CREATE TABLE notes (id bigint PRIMARY KEY, written_at timestamptz NOT NULL,"
        " visits int NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "INSERT INTO notes SELECT g, timestamptz '2024-01-01' + g * interval '1 day'"
        " FROM generate_series(1, 30) AS g"
    )

    class Old(bbo.BaseOperation):
        name = "test_batching.old_notes"
        pause_ms = 0

        def perform(self) -> None:
            cutoff = datetime.datetime.fromisoformat(self.arguments["before"])
            for sub_batch in self.each_sub_batch():
                sub_batch.where(self.table.written_at < cutoff).delete()

    operation = enqueue(
        Old,
        "notes",
        arguments={"before": "2024-01-11T00:00:00+00:00"},
        batch_size=8,
        sub_batch_size=3,
    )
    assert bbo.run_to_completion(operation.id).affected_tuple_count == 9
    assert conn.execute("SELECT min(id) FROM notes").fetchone() == (10,)


class Shutdown(BaseException):
    """Like dramatiq's worker-shutdown interrupt: not an Exception."""


class Interrupted(bbo.BaseOperation):
    name = "test_batching.interrupted"
    pause_ms = 0

    def perform(self) -> None:
        for index, sub_batch in enumerate(self.each_sub_batch()):
            sub_batch.update(visits=self.table.visits + 1)
            if index == 2:
                raise Shutdown()


def test_an_interrupt_gives_the_job_back_at_its_checkpoint_without_using_an_attempt(
    configured: str, conn
) -> None:
    make_items(conn, 50)
    operation = enqueue(Interrupted, batch_size=50, sub_batch_size=10)
    job = first_job(operation)

    with pytest.raises(Shutdown):
        run_job(operation.id, job.id)

    assert_thread_connection_idle()
    row = job_row(conn, job.id)
    assert (row["status"], row["attempts"], row["checkpoint_cursor"]) == (0, 0, [20])
    assert ids(conn, "visits = 1") == list(range(1, 21))


class AlwaysFails(bbo.BaseOperation):
    name = "test_batching.always_fails"
    pause_ms = 0

    def perform(self) -> None:
        raise ValueError("x" * 5000)


def test_jobs_that_fail_every_attempt_fail_the_operation_at_the_end_of_its_range(
    configured: str, conn
) -> None:
    make_items(conn, 20)
    operation = enqueue(AlwaysFails, batch_size=10, sub_batch_size=10)

    failed = bbo.run_to_completion(operation.id)

    assert failed.status == OperationStatus.FAILED
    assert failed.finished_at is not None
    jobs = bbo.list_jobs(failed)
    assert [(j.status, j.attempts) for j in jobs] == [(JobStatus.FAILED, 3)] * 2
    assert jobs[0].exception_class == "ValueError"
    assert jobs[0].exception_message is not None and len(jobs[0].exception_message) == 2000
    assert bbo.run_to_completion(operation.id).status == OperationStatus.FAILED  # left alone
