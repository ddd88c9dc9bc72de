"""What ``dramatiq-bbo demo --dsn`` leaves on a server of yours: its own rows and messages are
deleted, the schemas it installed are dropped, and a schema that was there before (or that
holds anything not the demo's) stays, said in one line (``dramatiq_bbo.demo.leftovers``)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo import migrations
from dramatiq_bbo.demo import table
from dramatiq_bbo.demo.leftovers import Leftovers
from dramatiq_bbo.demo.operation import DATABASE, PurgeDoneTodos
from dramatiq_bbo.demo.run import QUEUE
from tests.integration.steering_support import Visit, make_counters


def demo_rows(dsn: str) -> Any:
    """What a demo run writes: its table, its operation (and a job), a queue message."""
    table.create(dsn, 100, datetime.datetime.now(datetime.UTC))
    bbo.configure(databases={DATABASE: dsn})
    try:
        operation = bbo.enqueue(
            PurgeDoneTodos, table.TABLE, "id", arguments={"updated_before": "2000-01-01"}
        ).operation
        bbo.run_to_completion(operation.id, database=DATABASE)
    finally:
        bbo.reset()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dramatiq.queue (message_id, queue_name, state, message)"
            " VALUES (%s, %s, 'queued', '{}')",
            [uuid.uuid4(), f"{QUEUE}.DQ"],
        )
    table.drop(dsn)
    return operation.id


def schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname IN ('bbo', 'dramatiq', 'bbo_demo')"
        ).fetchall()
    return {row[0] for row in rows}


def test_the_schemas_the_demo_installed_are_dropped(empty_dsn: str) -> None:
    leftovers = Leftovers.before(empty_dsn, QUEUE)
    migrations.migrate(empty_dsn)
    demo_rows(empty_dsn)

    leftovers.remove()

    assert schemas(empty_dsn) == set()
    assert leftovers.left == []


def test_on_a_database_already_migrated_only_the_demo_rows_go_and_the_schemas_are_named(
    dsn: str, database_factory: Callable[..., str]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        make_counters(conn, 10)
        conn.execute(
            "INSERT INTO dramatiq.queue (message_id, queue_name, state, message)"
            " VALUES (%s, 'default', 'queued', '{}')",
            [uuid.uuid4()],
        )
    bbo.configure(dsn=dsn)
    try:
        yours = bbo.enqueue(Visit, "counters", "id").operation.id
    finally:
        bbo.reset()
    leftovers = Leftovers.before(dsn, QUEUE)
    demo_rows(dsn)

    leftovers.remove()

    assert schemas(dsn) == {"bbo", "dramatiq"}
    with psycopg.connect(dsn) as conn:
        operations = conn.execute(
            "SELECT id, job_class_name FROM bbo.background_operation_workers_cell_local"
        ).fetchall()
        jobs = conn.execute("SELECT count(*) FROM bbo.background_operation_jobs_cell_local")
        queues = conn.execute("SELECT queue_name FROM dramatiq.queue").fetchall()
        assert operations == [(yours, Visit.name)]
        assert (jobs.fetchone(), queues) == ((0,), [("default",)])
    assert leftovers.left == [
        "schema bbo (it was there before the demo; the demo's rows were deleted)",
        "schema dramatiq (it was there before the demo; the demo's messages were deleted)",
    ]
