"""The table an operation runs on is exactly the table enqueue validated, whatever its name.

Each case builds the intended table next to look-alikes — the same name without its quotes,
split at its dot, in another case or schema — fills them all, enqueues a class that deletes
every row it walks, and runs it: only the intended table may end up empty. The hypothesis
properties do the same over generated names (quotes, dots, unicode, reserved words, 63-byte
names), and check that generated arguments and cursor values either are refused with a
typed error that wrote nothing, or are stored and walked faithfully.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from dramatiq_bbo.state.records import OperationStatus
from tests.faults.identifier_support import (
    count,
    create_table,
    define_deleter,
    quoted,
    written_rows,
)

__all__ = ["define_deleter"]  # the fixture, re-exported for pytest

pytestmark = [pytest.mark.usefixtures("configured"), pytest.mark.timeout(240)]

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def schemas(conn: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """Schemas a test creates, dropped (with their tables) when it ends."""
    created: list[str] = []
    yield created
    for schema in created:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run_and_count(
    conn: psycopg.Connection[Any],
    operation_class: type[bbo.BaseOperation],
    spelled: str,
    tables: list[tuple[str, str]],
) -> tuple[bbo.OperationRecord, dict[tuple[str, str], int]]:
    operation = bbo.enqueue(operation_class, spelled, "id", batch_size=2, sub_batch_size=1)
    finished = bbo.run_to_completion(operation.operation.id)
    return finished, {table: count(conn, *table) for table in tables}


# -- look-alikes, one by one -------------------------------------------------------------------
def test_a_quoted_name_runs_on_the_table_whose_name_holds_the_quotes(conn, schemas, define_deleter):
    schemas.append("app")
    create_table(conn, "app", "todos")
    create_table(conn, "app", '"todos"')
    finished, counts = run_and_count(
        conn, define_deleter(), 'app."""todos"""', [("app", "todos"), ("app", '"todos"')]
    )
    assert finished.status == OperationStatus.FINISHED
    assert (finished.table_schema, finished.table_name) == ("app", '"todos"')
    assert counts == {("app", '"todos"'): 0, ("app", "todos"): 5}


def test_a_dotted_name_runs_on_that_table_not_on_the_schema_and_table_its_parts_name(
    conn, schemas, define_deleter
):
    schemas.extend(["app", "dot"])
    create_table(conn, "app", "dot.ted")
    create_table(conn, "dot", "ted")
    create_table(conn, "app", "ted")
    tables = [("app", "dot.ted"), ("dot", "ted"), ("app", "ted")]
    finished, counts = run_and_count(conn, define_deleter(), 'app."dot.ted"', tables)
    assert finished.status == OperationStatus.FINISHED
    assert counts == {("app", "dot.ted"): 0, ("dot", "ted"): 5, ("app", "ted"): 5}


@pytest.mark.parametrize(
    ("intended", "look_alikes"),
    [
        ("Todos", ["todos", "TODOS"]),
        ("tâches été", ["taches ete", "tâches"]),
        ("select", ["Select", '"select"']),
        ("t" * 63, ["t" * 62]),
        ("é" * 31 + "x", ["é" * 31]),  # 63 bytes, 32 characters
        ("a;DROP TABLE b", ["a", "b"]),
        ('say "hi"', ["say hi", 'say "hi']),
    ],
    ids=["mixed-case", "unicode", "reserved-word", "63-bytes", "63-bytes-unicode", "sql", "quotes"],
)
def test_a_name_runs_on_exactly_the_table_so_named(
    conn, schemas, define_deleter, intended, look_alikes
):
    schema = f"s_{uuid.uuid4().hex[:8]}"
    schemas.append(schema)
    for name in [intended, *look_alikes]:
        create_table(conn, schema, name)
    tables = [(schema, name) for name in [intended, *look_alikes]]
    finished, counts = run_and_count(conn, define_deleter(), quoted(schema, intended), tables)
    assert finished.status == OperationStatus.FINISHED
    assert counts == {table: 0 if table[1] == intended else 5 for table in tables}


def test_a_64_byte_name_is_refused_rather_than_truncated_to_a_63_byte_table(
    conn, schemas, define_deleter
):
    schemas.append("app")
    create_table(conn, "app", "t" * 63)
    before = written_rows(conn)
    with pytest.raises(errors.InvalidIdentifier, match="64 bytes"):
        bbo.enqueue(define_deleter(), quoted("app", "t" * 64), "id")
    assert written_rows(conn) == before and count(conn, "app", "t" * 63) == 5


def test_a_table_replaced_under_the_same_name_after_enqueue_is_not_walked(
    conn, schemas, define_deleter
):
    schemas.append("app")
    create_table(conn, "app", "todos")
    operation = bbo.enqueue(define_deleter(), "app.todos", "id").operation
    conn.execute("ALTER TABLE app.todos RENAME TO old_todos")
    create_table(conn, "app", "todos", rows=7)
    with pytest.raises(errors.TableChanged, match="app.todos"):
        bbo.run_to_completion(operation.id)
    assert (count(conn, "app", "todos"), count(conn, "app", "old_todos")) == (7, 5)
    assert bbo.list_jobs(operation.id) == []


@pytest.mark.parametrize("name", ["pct%", "a%b", "a%%s", "%s"])
def test_a_name_holding_a_percent_sign_is_refused_before_anything_is_written(
    conn, schemas, define_deleter, name
):
    """The driver reads '%' in a statement as a placeholder: ``"a%%s"`` would reach Postgres
    as ``"a%s"``, another table. Such names are refused, typed, before any write."""
    schemas.append("app")
    create_table(conn, "app", name)
    if "%%" in name:  # the table the driver would have turned it into
        create_table(conn, "app", name.replace("%%", "%"))
    before = written_rows(conn)
    with pytest.raises(errors.InvalidIdentifier, match="'%'"):
        bbo.enqueue(define_deleter(), quoted("app", name), "id")
    assert written_rows(conn) == before and count(conn, "app", name) == 5


# -- properties --------------------------------------------------------------------------------
_RESERVED = ["select", "table", "user", "order", "from", "null", "Select", "END", "public"]
_TRICKY = st.sampled_from(['"', ".", " ", "'", ";", "\\", "-", "$", "é", "東", "✓", "ß"])
_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
_NAME = st.one_of(
    st.sampled_from(_RESERVED),
    st.text(st.one_of(_TRICKY, _CHARS), min_size=1, max_size=12),
    st.builds(
        lambda c, n: (c * 63).encode()[:63].decode("utf-8", "ignore")[:n],
        _TRICKY,
        st.integers(60, 63),
    ),
    st.just("x" * 63),
).filter(lambda name: 1 <= len(name.encode()) <= 63 and name.strip() != "")


def _variants(name: str) -> list[str]:
    """Names a re-parse of ``name`` could land on."""
    candidates = [
        name.replace('"', ""),
        name.strip('"'),
        name.lower(),
        name.upper(),
        *name.split("."),
        name[:-1],
    ]
    return [c for c in dict.fromkeys(candidates) if c and c != name and len(c.encode()) <= 63]


@pytest.mark.slow
@PROPERTY
@given(name=_NAME, in_own_schema=st.booleans())
@example(name="\ud7fc", in_own_schema=False)  # no letter for peewee to name a model after
@example(name='"todos"', in_own_schema=True)
@example(name="dot.ted", in_own_schema=True)
def test_property_any_valid_name_runs_on_exactly_that_table(
    conn, define_deleter, name, in_own_schema
):
    own = f"s_{uuid.uuid4().hex[:8]}"
    decoys = f"d_{uuid.uuid4().hex[:8]}"
    schema = own if in_own_schema else decoys
    tables = [(schema, name)]
    tables += [(s, v) for v in _variants(name) for s in (own, decoys)]
    if "." in name:
        first, rest = name.split(".", 1)
        if first and rest and not first.startswith("pg_") and len(rest.encode()) <= 63:
            tables.append((first, rest))
    tables = list(dict.fromkeys(tables))
    created = {s for s, _ in tables}
    try:
        for table in tables:
            create_table(conn, *table)
        before = written_rows(conn)
        try:
            finished, counts = run_and_count(conn, define_deleter(), quoted(schema, name), tables)
        except errors.BBOError:
            assert written_rows(conn) == before
            return
        assert finished.status == OperationStatus.FINISHED
        assert counts == {table: 0 if table == (schema, name) else 5 for table in tables}
    finally:
        for created_schema in created:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(created_schema))
            )


_TEXT = st.text(
    st.one_of(_CHARS, _TRICKY, st.sampled_from(["\x00", "\ud800", "\udfff"])), max_size=8
)
_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(-1e9, 1e9),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    _TEXT,
)
_JSON = st.recursive(
    _LEAF,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=12,
)


def _representable(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(_representable(v) for v in value)
    if isinstance(value, dict):
        return all(_representable(k) and _representable(v) for k, v in value.items())
    return True


@pytest.fixture
def todos(conn: psycopg.Connection[Any]) -> str:
    conn.execute("CREATE TABLE todos (id bigint PRIMARY KEY)")
    conn.execute("INSERT INTO todos SELECT generate_series(1, 3)")
    return "todos"


@pytest.mark.slow
@PROPERTY
@given(arguments=st.dictionaries(_TEXT, _JSON, max_size=4))
def test_property_arguments_are_stored_faithfully_or_refused_with_nothing_written(
    conn, todos, define_deleter, arguments
):
    before = written_rows(conn)
    op = define_deleter()
    if not _representable(arguments):
        with pytest.raises(errors.InvalidArguments):
            bbo.enqueue(op, todos, "id", arguments=arguments)
        assert written_rows(conn) == before
        return
    stored = bbo.enqueue(op, todos, "id", arguments=arguments).operation
    assert stored.job_arguments == arguments
    assert bbo.get_operation(stored.id).job_arguments == arguments


_CURSOR_TEXT = st.text(st.one_of(_CHARS, _TRICKY), min_size=0, max_size=10)


@pytest.mark.slow
@PROPERTY
@given(values=st.lists(_CURSOR_TEXT, min_size=1, max_size=12, unique=True))
@example(values=["a"])  # a text cursor once walked nothing at all
def test_property_text_cursor_values_are_each_walked_once(
    conn, schemas, define_deleter, values: list[str]
):
    schema = f"c_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        table = sql.Identifier(schema, "keyed")
        conn.execute(sql.SQL("CREATE TABLE {} (k text PRIMARY KEY)").format(table))
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [[v] for v in values]
            )
        create_table(conn, schema, "other")
        op = define_deleter()
        operation = bbo.enqueue(op, f"{schema}.keyed", "k", batch_size=3, sub_batch_size=2)
        finished = bbo.run_to_completion(operation.operation.id)
        assert finished.status == OperationStatus.FINISHED
        assert finished.affected_tuple_count == len(values)
        assert count(conn, schema, "keyed") == 0 and count(conn, schema, "other") == 5
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
