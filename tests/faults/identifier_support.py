"""Shared pieces of the identifier and malformed-input fault tests: counting what was
written, and a throw-away operation class that deletes every row it walks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import dramatiq_bbo as bbo
from dramatiq_bbo.operation import unregister

#: every table a refused call must leave untouched
WRITTEN_TABLES = (
    "bbo.background_operation_workers_cell_local",
    "bbo.background_operation_workers",
    "bbo.background_operation_jobs_cell_local",
    "bbo.background_operation_jobs",
    "dramatiq.queue",
)


def written_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows in the bbo state tables and the broker's queue, by table."""
    counts = {}
    for name in WRITTEN_TABLES:
        schema, table = name.split(".")
        statement = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        row = conn.execute(statement).fetchone()
        assert row is not None
        counts[name] = int(row[0])
    return counts


def quoted(schema: str | None, name: str) -> str:
    """A table name spelled for enqueue with every part double-quoted, SQL style."""
    part = '"' + name.replace('"', '""') + '"'
    return part if schema is None else '"' + schema.replace('"', '""') + '".' + part


def create_table(conn: psycopg.Connection[Any], schema: str, name: str, rows: int = 5) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    table = sql.Identifier(schema, name)
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY)").format(table))
    # no parameters: a '%' in the name would read as a placeholder
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT generate_series(1, {})").format(table, sql.Literal(rows))
    )


def count(conn: psycopg.Connection[Any], schema: str, name: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
    ).fetchone()
    assert row is not None
    return int(row[0])


def _delete_everything(self: Any) -> None:
    for sub_batch in self.each_sub_batch():
        sub_batch.delete()


@pytest.fixture
def define_deleter() -> Iterator[Callable[..., type[bbo.BaseOperation]]]:
    """``define_deleter(**attributes)``: a registered class deleting every row it walks,
    with a unique name, unregistered when the test ends."""
    names: list[str] = []

    def define(**attributes: Any) -> type[bbo.BaseOperation]:
        name = f"fault_op_{uuid.uuid4().hex[:10]}"
        namespace = {
            "name": name,
            "perform": _delete_everything,
            "interval_seconds": 0,
            "pause_ms": 0,
            **attributes,
        }
        names.append(name)
        return type(name, (bbo.BaseOperation,), namespace)

    yield define
    for name in names:
        unregister(name)
