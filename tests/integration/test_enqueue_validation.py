"""enqueue() refuses every bad request before writing anything, with a typed error that names
the offending value; and accepts the unusual-but-valid shapes of tables and cursors."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from tests.integration.enqueue_support import define_operation, make_todos, operation_rows

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def todos(conn: psycopg.Connection[Any]) -> str:
    make_todos(conn)
    return "todos"


def refused(
    conn: psycopg.Connection[Any], error: type[Exception], offending: str, call: Any
) -> str:
    """Run ``call``; assert it raises ``error`` naming ``offending`` and wrote no row."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert offending in message, message
    assert isinstance(caught.value, errors.BBOError)
    assert operation_rows(conn) == 0
    return message


# -- the class ---------------------------------------------------------------------------------
def test_enqueue_refuses_unknown_class_name(conn, todos):
    refused(
        conn,
        errors.UnknownOperationClass,
        "no_such_operation",
        lambda: bbo.enqueue("no_such_operation", todos, "id"),
    )


def test_enqueue_refuses_a_class_that_is_not_an_operation(conn, todos):
    refused(conn, errors.UnknownOperationClass, "dict", lambda: bbo.enqueue(dict, todos, "id"))


# -- the table ---------------------------------------------------------------------------------
def test_enqueue_refuses_missing_table(conn, define_operation):
    op = define_operation()
    refused(
        conn, errors.TableNotFound, "no_such_table", lambda: bbo.enqueue(op, "no_such_table", "id")
    )


def test_enqueue_refuses_missing_schema(conn, todos, define_operation):
    op = define_operation()
    refused(conn, errors.TableNotFound, "nowhere", lambda: bbo.enqueue(op, "nowhere.todos", "id"))


def test_enqueue_refuses_a_view(conn, todos, define_operation):
    conn.execute("CREATE VIEW todo_view AS SELECT * FROM todos")
    op = define_operation()
    message = refused(
        conn, errors.TableNotFound, "todo_view", lambda: bbo.enqueue(op, "todo_view", "id")
    )
    assert "view" in message


@pytest.mark.parametrize("name", ["", "a.b.c", 42, '"unbalanced'])
def test_enqueue_refuses_malformed_table_names(conn, define_operation, name):
    op = define_operation()
    refused(conn, errors.TableNotFound, repr(name), lambda: bbo.enqueue(op, name, "id"))


# -- the cursor --------------------------------------------------------------------------------
def test_enqueue_refuses_column_outside_the_class_cursor(conn, todos, define_operation):
    op = define_operation(cursor=("user_id", "id"))
    refused(conn, errors.ColumnNotInCursor, "'done'", lambda: bbo.enqueue(op, todos, "done"))


def test_enqueue_refuses_missing_column(conn, todos, define_operation):
    op = define_operation()
    message = refused(conn, errors.ColumnNotFound, "'nope'", lambda: bbo.enqueue(op, todos, "nope"))
    assert "id, user_id, done" in message  # lists the table's columns


def test_enqueue_refuses_missing_composite_cursor_column(conn, todos, define_operation):
    op = define_operation(cursor=("tenant_id", "id"))
    refused(conn, errors.ColumnNotFound, "'tenant_id'", lambda: bbo.enqueue(op, todos, "id"))


def test_enqueue_refuses_nullable_cursor_column(conn, define_operation):
    conn.execute("CREATE TABLE loose (id bigint UNIQUE)")
    op = define_operation()
    message = refused(conn, errors.CursorNotIndexed, "'id'", lambda: bbo.enqueue(op, "loose", "id"))
    assert "nullable" in message and "SET NOT NULL" in message


def test_enqueue_refuses_unindexed_cursor_column(conn, define_operation):
    conn.execute("CREATE TABLE plain (id bigint NOT NULL, code text NOT NULL)")
    op = define_operation()
    message = refused(conn, errors.CursorNotIndexed, "id", lambda: bbo.enqueue(op, "plain", "id"))
    assert "does not lead" in message
    assert "CREATE UNIQUE INDEX CONCURRENTLY ON public.plain (id)" in message


def test_enqueue_refuses_cursor_leading_no_index_in_its_order(conn, define_operation):
    conn.execute("CREATE TABLE pairs (a bigint NOT NULL, b bigint NOT NULL, PRIMARY KEY (b, a))")
    op = define_operation(cursor=("a", "b"))
    message = refused(
        conn, errors.CursorNotIndexed, "(a, b)", lambda: bbo.enqueue(op, "pairs", "a")
    )
    assert "CREATE INDEX CONCURRENTLY ON public.pairs (a, b)" in message


def test_enqueue_refuses_cursor_indexed_only_by_a_hash_index(conn, define_operation):
    conn.execute("CREATE TABLE hashed (id bigint NOT NULL)")
    conn.execute("CREATE INDEX hashed_id ON hashed USING hash (id)")
    op = define_operation()
    refused(conn, errors.CursorNotIndexed, "(id)", lambda: bbo.enqueue(op, "hashed", "id"))


def test_enqueue_refuses_cursor_indexed_only_by_a_partial_index(conn, define_operation):
    conn.execute("CREATE TABLE halves (id bigint NOT NULL, live boolean NOT NULL)")
    conn.execute("CREATE UNIQUE INDEX halves_live_id ON halves (id) WHERE live")
    op = define_operation()
    refused(conn, errors.CursorNotIndexed, "(id)", lambda: bbo.enqueue(op, "halves", "id"))


def test_enqueue_refuses_non_unique_cursor_column(conn, todos, define_operation):
    op = define_operation(cursor=("user_id",))
    message = refused(
        conn, errors.CursorNotIndexed, "(user_id)", lambda: bbo.enqueue(op, todos, "user_id")
    )
    assert "not unique" in message and "CREATE UNIQUE INDEX" in message


# -- the arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "offending"),
    [
        ({"ids": {1, 2}}, "set"),
        ({"when": object()}, "object"),
        ({"ratio": float("nan")}, "nan"),
        ("delete everything", "'delete everything'"),
        (42, "42"),
        ({1: "a", "b": 2}, "'b'"),  # mixed key types cannot be sorted into canonical JSON
    ],
)
def test_enqueue_refuses_non_json_arguments(conn, todos, define_operation, arguments, offending):
    op = define_operation()
    refused(
        conn,
        errors.InvalidArguments,
        offending,
        lambda: bbo.enqueue(op, todos, "id", arguments=arguments),
    )


def test_enqueue_refuses_oversized_arguments(conn, todos, define_operation):
    op = define_operation()
    arguments = {"blob": "x" * (64 * 1024)}
    refused(
        conn,
        errors.InvalidArguments,
        str(64 * 1024 + len('{"blob":""}')),
        lambda: bbo.enqueue(op, todos, "id", arguments=arguments),
    )


# -- the sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "offending"),
    [
        ({"batch_size": 0}, "batch_size must be an int > 0, got 0"),
        ({"batch_size": -5}, "got -5"),
        ({"batch_size": True}, "got True"),
        ({"batch_size": 10.5}, "got 10.5"),
        ({"sub_batch_size": "10"}, "got '10'"),
        ({"batch_size": 2**31}, f"got {2**31}"),
        ({"batch_size": 100, "sub_batch_size": 101}, "sub_batch_size 101"),
        ({"pause_ms": -1}, "pause_ms must be an int >= 0, got -1"),
        ({"interval_seconds": -0.5}, "got -0.5"),
        ({"interval_seconds": float("inf")}, "got inf"),
        ({"min_batch_size": 5000, "max_batch_size": 4000}, "min_batch_size 5000"),
        ({"max_batch_size": 0}, "max_batch_size must be an int > 0, got 0"),
    ],
)
def test_enqueue_refuses_bad_sizes(conn, todos, define_operation, overrides, offending):
    op = define_operation()
    refused(
        conn, errors.InvalidBatchSizes, offending, lambda: bbo.enqueue(op, todos, "id", **overrides)
    )


def test_enqueue_refuses_bad_class_default_sizes_naming_the_class(conn, todos, define_operation):
    op = define_operation(sub_batch_size=5000)
    message = refused(
        conn, errors.InvalidBatchSizes, "sub_batch_size 5000", lambda: bbo.enqueue(op, todos, "id")
    )
    assert "batch_size 1000" in message


def test_enqueue_refuses_bad_priority(conn, todos, define_operation):
    op = define_operation()
    refused(
        conn, errors.InvalidPriority, "40000", lambda: bbo.enqueue(op, todos, "id", priority=40000)
    )


def test_the_class_priority_is_the_default_and_the_call_wins(conn, todos, define_operation):
    op = define_operation(priority=7)
    assert bbo.enqueue(op, todos, "id").operation.priority == 7
    assert bbo.enqueue(op, todos, "id", arguments={"x": 1}, priority=-3).operation.priority == -3
    plain = define_operation()
    assert bbo.enqueue(plain, todos, "id").operation.priority == 0


@pytest.mark.parametrize("value", [40000, 1.5, True, "high"])
def test_a_bad_class_priority_is_refused_when_the_class_is_defined(define_operation, value):
    with pytest.raises(errors.OperationDefinitionError, match="priority must be an int"):
        define_operation(priority=value)


# -- the scope ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "offending"),
    [
        ({"organization_id": 7}, "organization_id=7, user_id=None"),
        ({"user_id": 42}, "organization_id=None, user_id=42"),
        ({"organization_id": "7", "user_id": 42}, "'7'"),
        ({"organization_id": 7, "user_id": True}, "True"),
        ({"user": SimpleNamespace(id=42, organization_id=7), "organization_id": 7}, "not both"),
        ({"user": SimpleNamespace(id=42)}, "namespace(id=42)"),
        ({"user": SimpleNamespace(id=42, organization_id=None)}, "organization_id=None"),
        ({"user": SimpleNamespace(id=uuid.UUID(int=1), organization_id=7)}, "UUID"),
    ],
)
def test_enqueue_refuses_half_given_or_malformed_scope(
    conn, todos, define_operation, scope, offending
):
    op = define_operation()
    refused(conn, errors.InvalidScope, offending, lambda: bbo.enqueue(op, todos, "id", **scope))


# -- the database and connection ---------------------------------------------------------------
def test_enqueue_refuses_unknown_database(conn, todos, define_operation):
    op = define_operation()
    refused(
        conn,
        errors.UnknownDatabase,
        "'elsewhere'",
        lambda: bbo.enqueue(op, todos, "id", database="elsewhere"),
    )


def test_enqueue_refuses_class_naming_an_unknown_database(conn, todos, define_operation):
    op = define_operation(database="reporting")
    refused(conn, errors.UnknownDatabase, "'reporting'", lambda: bbo.enqueue(op, todos, "id"))


def test_enqueue_refuses_something_that_is_not_a_connection(conn, todos, define_operation):
    op = define_operation()
    refused(
        conn,
        errors.InvalidConnection,
        "'postgresql://x'",
        lambda: bbo.enqueue(op, todos, "id", connection="postgresql://x"),
    )


# -- accepted shapes ---------------------------------------------------------------------------
def test_enqueue_accepts_composite_cursor_with_composite_primary_key(conn, define_operation):
    conn.execute(
        "CREATE TABLE events (partition_id int NOT NULL, id bigint NOT NULL,"
        " PRIMARY KEY (partition_id, id))"
    )
    conn.execute("INSERT INTO events SELECT g % 3, g FROM generate_series(1, 30) AS g")
    op = define_operation(cursor=("partition_id", "id"))
    operation = bbo.enqueue(op, "events", "id").operation
    assert operation.cursor_columns == ("partition_id", "id")
    assert operation.min_cursor == [0, 3]
    assert operation.max_cursor == [2, 29]


def test_enqueue_accepts_schema_qualified_names(conn, define_operation):
    conn.execute("CREATE SCHEMA app")
    conn.execute("CREATE TABLE app.items (id bigint PRIMARY KEY)")
    conn.execute("INSERT INTO app.items VALUES (5), (6)")
    operation = bbo.enqueue(define_operation(), "app.items", "id").operation
    assert (operation.table_schema, operation.table_name) == ("app", "items")
    assert (operation.min_cursor, operation.max_cursor) == ([5], [6])


def test_enqueue_accepts_quoted_mixed_case_names(conn, define_operation):
    conn.execute('CREATE SCHEMA "Billing"')
    conn.execute('CREATE TABLE "Billing"."TodoItems" ("ItemId" bigint PRIMARY KEY)')
    conn.execute('INSERT INTO "Billing"."TodoItems" VALUES (1), (2), (3)')
    conn.execute('CREATE TABLE "TodoItems" ("ItemId" bigint PRIMARY KEY)')
    conn.execute('INSERT INTO "TodoItems" VALUES (7)')
    op = define_operation()
    assert bbo.enqueue(op, "TodoItems", "ItemId").operation.max_cursor == [7]
    billing = bbo.enqueue(op, '"Billing"."TodoItems"', "ItemId").operation
    assert (billing.table_schema, billing.table_name, billing.max_cursor) == (
        "Billing",
        "TodoItems",
        [3],
    )
    # A lower-case spelling is another table, which does not exist.
    with pytest.raises(errors.TableNotFound, match="todoitems"):
        bbo.enqueue(op, "todoitems", "ItemId")


def test_enqueue_accepts_uuid_primary_key_cursor(conn, define_operation):
    conn.execute("CREATE TABLE documents (id uuid PRIMARY KEY DEFAULT gen_random_uuid())")
    conn.execute("INSERT INTO documents SELECT FROM generate_series(1, 20)")
    operation = bbo.enqueue(define_operation(), "documents", "id").operation
    lowest = conn.execute("SELECT id FROM documents ORDER BY id LIMIT 1").fetchone()[0]
    highest = conn.execute("SELECT id FROM documents ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert operation.min_cursor == [str(lowest)]
    assert operation.max_cursor == [str(highest)]
    # The stored value casts back to the column type (the documented cursor convention).
    row = conn.execute(
        "SELECT count(*) FROM documents WHERE id <= (%s::jsonb ->> 0)::uuid",
        [psycopg.types.json.Jsonb(operation.max_cursor)],
    ).fetchone()
    assert row[0] == 20
