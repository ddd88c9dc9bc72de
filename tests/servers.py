"""Private Postgres servers in chosen states, for tests that need more than a database.

Most tests share one server (``BBO_TEST_DSN`` or an embedded one) and get a fresh database
on it. Health indicators need whole servers in particular states — archiving failing, an
eager autovacuum, a streaming standby — so these fixtures start their own with
:mod:`dramatiq_bbo.testing.servers`, whatever ``BBO_TEST_DSN`` says, and stop them afterwards.

Use: ``from tests.servers import server_factory  # noqa: F401`` in a test module, then
``server_factory(settings={...})`` or ``server_factory.standby(primary)`` in a fixture.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from dramatiq_bbo.health.base import Context
from dramatiq_bbo.state.records import OperationRecord, OperationStatus
from dramatiq_bbo.testing.servers import PostgresServer, make_standby


class ServerFactory:
    """Starts servers for one test module and stops them all at its end."""

    def __init__(self) -> None:
        self.servers: list[PostgresServer] = []

    def __call__(self, settings: Mapping[str, Any] | None = None) -> PostgresServer:
        server = PostgresServer(settings=settings)
        self.servers.append(server)
        return server

    def standby(
        self, primary: PostgresServer, settings: Mapping[str, Any] | None = None
    ) -> PostgresServer:
        server = make_standby(primary, settings=settings)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        # Standbys first: a primary's fast shutdown waits for its walsenders.
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


@pytest.fixture(scope="module")
def server_factory() -> Iterator[ServerFactory]:
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.stop_all()


def connect(server: PostgresServer, user: str = "postgres") -> psycopg.Connection[Any]:
    """An autocommit connection to the server's ``postgres`` database."""
    return psycopg.connect(server.dsn_for("postgres", user), autocommit=True)


def create_plain_role(server: PostgresServer, name: str = "plain") -> str:
    """A login role with no special rights (no superuser, no pg_monitor)."""
    with connect(server) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
        if not exists:
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(name))
            )
    return name


def operation_record(table_name: str, database_name: str = "postgres") -> OperationRecord:
    """An operation row on ``table_name`` ("schema.table"), as the store would return it."""
    now = datetime.now(UTC)
    return OperationRecord(
        id=1,
        partition=0,
        job_class_name="HealthProbe",
        table_name=table_name,
        column_name="id",
        cursor_columns=("id",),
        job_arguments=[],
        database_name=database_name,
        status=OperationStatus.ACTIVE,
        priority=0,
        batch_size=1_000,
        sub_batch_size=100,
        min_batch_size=1_000,
        max_batch_size=2_000_000,
        pause_ms=100,
        interval_seconds=120.0,
        min_cursor=[0],
        max_cursor=None,
        next_cursor=None,
        total_tuple_count=None,
        processed_tuple_count=0,
        affected_tuple_count=0,
        on_hold_until=None,
        hold_reason=None,
        lease_owner=None,
        lease_expires_at=None,
        last_run_at=None,
        started_at=now,
        finished_at=None,
        created_at=now,
        updated_at=now,
    )


def context(
    conn: psycopg.Connection[Any],
    table_name: str = "public.todos",
    settings: Mapping[str, Any] | None = None,
) -> Context:
    """What the evaluator would hand an indicator: the operation, a connection, thresholds."""
    database = conn.info.dbname
    return Context(
        operation=operation_record(table_name, database),
        connection=conn,
        database=database,
        settings=dict(settings or {}),
    )
