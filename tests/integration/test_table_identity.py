"""Which table an operation may run on, and how it is stored: the class's declared tables,
the refused schemas, a model bound to another table, the unindexed-scope warning, and the
migration that split old ``schema.table`` rows into (schema, name)."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee
import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from dramatiq_bbo.logs import SCOPE_NOT_INDEXED
from dramatiq_bbo.migrations import migrate, migration_files
from dramatiq_bbo.pipeline.orchestrator import Decision, orchestrate
from tests.integration.enqueue_support import define_operation, operation_rows
from tests.integration.pipeline_support import no_broker

__all__ = ["define_operation", "no_broker"]  # fixtures, re-exported for pytest


@pytest.fixture
def tables(configured: str, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("CREATE SCHEMA archive")
    for table in ("todos", "notes", "archive.todos"):
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, user_id bigint NOT NULL,"
            " done boolean NOT NULL DEFAULT false)"
        )
        conn.execute(
            f"INSERT INTO {table} SELECT g, g % 7, g % 2 = 0 FROM generate_series(1, 50) g"
        )
        conn.execute(f"ANALYZE {table}")
    return conn


# -- declared tables ---------------------------------------------------------------------------
def test_a_class_runs_on_the_tables_it_declares_in_any_spelling(tables, define_operation):
    op = define_operation(tables=("todos", "archive.todos"))
    assert bbo.enqueue(op, "todos", "id").operation.table_schema == "public"
    assert bbo.enqueue(op, "public.todos", "id", arguments={"b": 1}).duplicate is False
    assert bbo.enqueue(op, '"archive"."todos"', "id").operation.table_schema == "archive"


def test_a_class_is_refused_any_table_it_does_not_declare(tables, define_operation):
    op = define_operation(tables=("todos",))
    with pytest.raises(errors.TableNotAllowed, match="notes is not one of them"):
        bbo.enqueue(op, "notes", "id")
    with pytest.raises(errors.TableNotAllowed, match="archive.todos"):
        bbo.enqueue(op, "archive.todos", "id")  # same bare name, another schema
    assert operation_rows(tables) == 0


def test_schedule_refuses_a_table_outside_the_declared_ones_at_once(configured, define_operation):
    op = define_operation(tables=("todos",))
    with pytest.raises(errors.TableNotAllowed):
        bbo.schedule(op, "notes", "id", cron="0 * * * *")
    with pytest.raises(errors.TableNotAllowed, match="broker's message queue"):
        bbo.schedule(define_operation(), "dramatiq.queue", "message_id", cron="0 * * * *")


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("dramatiq.queue", "message_id"),
        ("bbo.background_operation_jobs", "id"),
        ("pg_catalog.pg_class", "oid"),
        ("pg_namespace", "oid"),  # found through the search_path, refused all the same
    ],
)
def test_the_library_broker_and_system_schemas_are_always_refused(
    tables, define_operation, table, column
):
    with pytest.raises(errors.TableNotAllowed, match="where no operation may run"):
        bbo.enqueue(define_operation(), table, column)
    assert operation_rows(tables) == 0


def test_a_class_model_bound_to_another_table_is_refused(tables, define_operation):
    class Note(peewee.Model):
        id = peewee.BigIntegerField(primary_key=True)

        class Meta:
            table_name = "notes"

    op = define_operation(model=Note)
    with pytest.raises(errors.OperationDefinitionError, match="bound to table notes"):
        bbo.enqueue(op, "todos", "id")
    assert bbo.enqueue(op, "notes", "id").operation.table_name == "notes"


# -- the unindexed-scope warning -----------------------------------------------------------------
def _scoped(column: str) -> Any:
    def scope(self: Any, query: Any) -> Any:
        return query.where(getattr(self.table, column) == self.arguments["value"])

    return scope


def test_a_scope_no_index_serves_draws_a_warning_naming_the_index(tables, define_operation, caplog):
    caplog.set_level(logging.WARNING, logger="dramatiq_bbo")
    result = bbo.enqueue(
        define_operation(scope=_scoped("user_id")), "todos", "id", arguments={"value": 3}
    )
    assert result.operation.status == bbo.OperationStatus.QUEUED  # a warning, not a refusal
    (warning,) = result.warnings
    assert "CREATE INDEX CONCURRENTLY ON public.todos (user_id, id)" in warning
    logged = [
        r.bbo for r in caplog.records if getattr(r, "bbo", {}).get("message") == SCOPE_NOT_INDEXED
    ]
    assert len(logged) == 1 and logged[0]["reason"] == warning


def test_a_scope_an_index_serves_draws_no_warning(tables, define_operation, caplog):
    tables.execute("CREATE INDEX todos_user_id_id ON todos (user_id, id)")
    caplog.set_level(logging.WARNING, logger="dramatiq_bbo")
    result = bbo.enqueue(
        define_operation(scope=_scoped("user_id")), "todos", "id", arguments={"value": 3}
    )
    assert result.warnings == ()
    assert not [
        r for r in caplog.records if getattr(r, "bbo", {}).get("message") == SCOPE_NOT_INDEXED
    ]


def test_a_scope_on_the_cursor_itself_draws_no_warning(tables, define_operation):
    result = bbo.enqueue(
        define_operation(scope=_scoped("id")), "todos", "id", arguments={"value": 3}
    )
    assert result.warnings == ()


# -- migration 0004 ------------------------------------------------------------------------------
def test_migration_0004_splits_rows_stored_as_schema_dot_table(empty_dsn, tmp_path: Path):
    older = tmp_path / "sql"
    older.mkdir()
    for file in migration_files():
        if file.version < "0004":
            shutil.copy(file.path, older / file.path.name)
    migrate(empty_dsn, older)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "a.b"')
        conn.execute('CREATE TABLE "a.b".c (id bigint PRIMARY KEY)')
        conn.execute("CREATE TABLE public.todos (id bigint PRIMARY KEY)")
        for status, name in ((0, "public.todos"), (0, "a.b.c"), (3, "gone.table"), (1, "x.y")):
            conn.execute(
                "INSERT INTO bbo.background_operation_workers_cell_local (job_class_name,"
                " table_name, column_name, cursor_columns, batch_size, sub_batch_size, min_cursor,"
                " status) VALUES ('Old', %s, 'id', '{id}', 10, 5, '[]', %s)",
                [name, status],
            )
    migrate(empty_dsn)
    migrate(empty_dsn)  # nothing left to do, nothing changed
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name, table_oid IS NOT NULL"
            " FROM bbo.background_operation_workers_cell_local ORDER BY id"
        ).fetchall()
        indexed = conn.execute(
            "SELECT pg_get_indexdef('bbo.bowcl_unfinished_configuration'::regclass)"
        ).fetchone()
    assert rows == [
        ("public", "todos", True),
        ("a.b", "c", True),
        ("gone", "table", False),
        ("x", "y", False),
    ]
    assert indexed is not None and "table_schema, table_name" in indexed[0]


# -- a table replaced after enqueue, met by the pipeline ------------------------------------------
def test_the_pipeline_holds_an_operation_whose_table_was_replaced_and_says_why(
    tables, define_operation, no_broker
):
    op = define_operation()
    operation = bbo.enqueue(op, "todos", "id").operation
    tables.execute("ALTER TABLE todos RENAME TO old_todos")
    tables.execute("CREATE TABLE todos (id bigint PRIMARY KEY)")
    tables.execute("INSERT INTO todos SELECT generate_series(1, 7)")

    decision = orchestrate("main", operation.id, operation.lease_owner)

    held = bbo.get_operation(operation.id)
    assert decision == Decision.HELD_BY_CHECK
    assert held.hold_reason is not None and "not the table this operation was enqueued on" in (
        held.hold_reason
    )
    assert held.on_hold_until is not None and held.on_hold_until > datetime.now(UTC)
    assert bbo.list_jobs(operation.id) == []
    counts = [
        tables.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("todos", "old_todos")
    ]
    assert counts == [7, 50]
    # a second message meets the hold and does nothing more
    assert orchestrate("main", operation.id, None) == Decision.ON_HOLD
