"""Shared pieces of the enqueue tests: throw-away operation classes and row counts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.operation import unregister


@pytest.fixture
def define_operation() -> Iterator[Callable[..., type[bbo.BaseOperation]]]:
    """``define_operation(cursor=..., scope=..., batch_size=...)``: a registered operation class
    with a unique name, unregistered when the test ends."""
    names: list[str] = []

    def define(**attributes: Any) -> type[bbo.BaseOperation]:
        name = f"test_op_{uuid.uuid4().hex[:10]}"
        namespace = {"name": name, "perform": lambda self: None, **attributes}
        names.append(name)
        return type(name, (bbo.BaseOperation,), namespace)

    yield define
    for name in names:
        unregister(name)


def operation_rows(conn: psycopg.Connection[Any]) -> int:
    """Operations in both scopes, all partitions."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM bbo.background_operation_workers_cell_local)"
        " + (SELECT count(*) FROM bbo.background_operation_workers)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def make_todos(conn: psycopg.Connection[Any], rows: int = 100, *, analyze: bool = True) -> None:
    """``todos(id bigint primary key, user_id, done)`` with ids 10, 20, ... (gaps)."""
    conn.execute(
        "CREATE TABLE todos (id bigint PRIMARY KEY, user_id bigint NOT NULL,"
        " done boolean NOT NULL DEFAULT false)"
    )
    conn.execute("CREATE INDEX todos_user_id_id ON todos (user_id, id)")
    conn.execute(
        "INSERT INTO todos SELECT g * 10, g %% 5, g %% 2 = 0 FROM generate_series(1, %s) AS g",
        [rows],
    )
    if analyze:
        conn.execute("ANALYZE todos")
