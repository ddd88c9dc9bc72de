"""Our ``0002_dramatiq_queue.sql`` is dramatiq-pg's own schema, written idempotently.

dramatiq-pg's DDL is generated from the installed library and applied to one database, our
migrate to another, and the two ``dramatiq`` schemas are compared from the catalog. A real
``dramatiq_pg.PostgresBroker`` then enqueues into our schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq_pg import PostgresBroker
from dramatiq_pg.schema import generate_init_sql

from dramatiq_bbo.migrations import migrate, migration_files

COLUMNS = """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid)
      FROM pg_attribute a
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = 'dramatiq.queue'::regclass AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum"""

STATE_LABELS = """
    SELECT e.enumlabel
      FROM pg_enum e
     WHERE e.enumtypid = 'dramatiq.state'::regtype
     ORDER BY e.enumsortorder"""

# Each index of dramatiq.queue by its columns, uniqueness and method; names reported apart.
INDEXES = """
    SELECT i.indisunique, i.indisprimary, am.amname,
           (SELECT array_agg(a.attname ORDER BY k.ord)
              FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_am am ON am.oid = c.relam
     WHERE i.indrelid = 'dramatiq.queue'::regclass
     ORDER BY 4, 1, 2"""

INDEX_NAMES = """
    SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = 'dramatiq.queue'::regclass ORDER BY 1"""

RELATIONS = """
    SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'dramatiq' ORDER BY 1"""


def dramatiq_catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            name: [tuple(row) for row in conn.execute(query).fetchall()]
            for name, query in {
                "columns": COLUMNS,
                "state_labels": STATE_LABELS,
                "indexes": INDEXES,
                "index_names": INDEX_NAMES,
                "relations": RELATIONS,
            }.items()
        }


@pytest.fixture
def dramatiq_pg_dsn(database_factory: Callable[..., str]) -> str:
    """A database holding only the schema dramatiq-pg's own DDL creates."""
    dsn = database_factory(migrated=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(generate_init_sql())
    return dsn


def test_0002_creates_the_same_dramatiq_schema_as_dramatiq_pg(
    dramatiq_pg_dsn: str, empty_dsn: str
) -> None:
    migrate(empty_dsn)

    ours = dramatiq_catalog(empty_dsn)
    theirs = dramatiq_catalog(dramatiq_pg_dsn)

    assert ours["columns"] == theirs["columns"]
    assert [c[0] for c in ours["columns"]] == [
        "message_id",
        "queue_name",
        "state",
        "mtime",
        "message",
        "result",
        "result_ttl",
    ]
    assert ours["state_labels"] == theirs["state_labels"]
    assert ours["state_labels"] == [("queued",), ("consumed",), ("rejected",), ("done",)]
    assert ours["indexes"] == theirs["indexes"]
    assert ours["relations"] == theirs["relations"]


def test_0002_names_the_indexes_as_dramatiq_pg_does(dramatiq_pg_dsn: str, dsn: str) -> None:
    # dramatiq-pg's "CREATE INDEX ON queue(state, mtime)" is auto-named; ours names it the same,
    # so an operator's notes about one database hold for the other.
    assert dramatiq_catalog(dramatiq_pg_dsn)["index_names"] == [
        ("queue_pkey",),
        ("queue_state_mtime_idx",),
    ]
    assert dramatiq_catalog(dsn)["index_names"] == dramatiq_catalog(dramatiq_pg_dsn)["index_names"]


def test_applying_0002_twice_changes_nothing(dsn: str) -> None:
    (file,) = [f for f in migration_files() if f.version == "0002"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        recorded = conn.execute("SELECT * FROM bbo.schema_migrations ORDER BY 1").fetchall()
    before = dramatiq_catalog(dsn)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(file.sql().encode("utf-8"))
        assert conn.execute("SELECT * FROM bbo.schema_migrations ORDER BY 1").fetchall() == recorded

    assert dramatiq_catalog(dsn) == before


def test_dramatiq_pg_broker_enqueues_into_our_schema(dsn: str) -> None:
    broker = PostgresBroker(url=dsn, results=False)
    try:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="bbo_schema_probe",
            actor_name="probe",
            args=(1, "two"),
            kwargs={"three": 3},
            options={},
            message_id=str(uuid.uuid4()),
        )
        broker.enqueue(message)
    finally:
        broker.close()
        broker.pool.closeall()

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT queue_name, state::text, message FROM dramatiq.queue WHERE message_id = %s",
            (message.message_id,),
        ).fetchone()
    assert row is not None
    queue_name, state, body = row
    assert (queue_name, state) == ("bbo_schema_probe", "queued")
    assert body["actor_name"] == "probe"
    assert body["args"] == [1, "two"]
    assert body["kwargs"] == {"three": 3}
