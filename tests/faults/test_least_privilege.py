"""The core path under a least-privilege role that owns nothing.

The schema is migrated by a superuser; the application connects as a role holding only DML
on the ``bbo`` and ``dramatiq`` tables (USAGE on the schemas and their sequences) and, on the
target table, exactly what its operation needs (SELECT to walk it, DELETE to delete from it).
Enqueue and ``run_to_completion`` must work; a table the role may not read is refused at
enqueue with a typed error naming the missing privilege, before anything is written.

Roles are cluster-wide, so this runs on a private server (never the shared one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from dramatiq_bbo.migrations import migrate
from dramatiq_bbo.operation import unregister
from dramatiq_bbo.state.records import OperationStatus
from dramatiq_bbo.testing.servers import PostgresServer
from tests.faults.identifier_support import written_rows
from tests.integration.pipeline_support import drive, no_broker
from tests.servers import ServerFactory, server_factory  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
__all__ = ["no_broker"]  # the fixture, re-exported for pytest

ROLE = "bbo_app"
GRANTS = """
    GRANT USAGE ON SCHEMA bbo, dramatiq TO bbo_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA bbo, dramatiq TO bbo_app;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA bbo, dramatiq TO bbo_app;
    GRANT SELECT, DELETE ON public.todos, public.tasks TO bbo_app;
    GRANT DELETE ON public.secrets TO bbo_app;
    GRANT SELECT ON hidden.items TO bbo_app;
"""


class DeleteDoneTodos(bbo.BaseOperation):
    name = "least_privilege_delete_done"
    tables = ("todos", "tasks", "secrets", "hidden.items")
    interval_seconds = 0
    pause_ms = 0
    batch_size = 50
    sub_batch_size = 10

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.where(self.table.done == True).delete()  # noqa: E712


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> PostgresServer:  # noqa: F811
    return server_factory()


@pytest.fixture(scope="module")
def app_dsn(server: PostgresServer) -> Iterator[str]:
    """The ``app`` database, migrated by the superuser; the DSN of the unprivileged role."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE app")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN")  # owns nothing, inherits nothing
    migrate(server.dsn_for("app"))
    with psycopg.connect(server.dsn_for("app"), autocommit=True) as conn:
        conn.execute("CREATE TABLE todos (id bigint PRIMARY KEY, done boolean NOT NULL)")
        conn.execute("INSERT INTO todos SELECT g, g % 3 = 0 FROM generate_series(1, 300) AS g")
        conn.execute("CREATE TABLE tasks (LIKE todos INCLUDING ALL)")
        conn.execute("INSERT INTO tasks SELECT * FROM todos")
        conn.execute("CREATE TABLE secrets (id bigint PRIMARY KEY, done boolean NOT NULL)")
        conn.execute("CREATE SCHEMA hidden")
        conn.execute("CREATE TABLE hidden.items (id bigint PRIMARY KEY, done boolean NOT NULL)")
        conn.execute(GRANTS)
    yield server.dsn_for("app", ROLE)
    unregister(DeleteDoneTodos.name)


@pytest.fixture
def as_app(app_dsn: str) -> Iterator[str]:
    bbo.configure(dsn=app_dsn)
    try:
        yield app_dsn
    finally:
        bbo.reset()


@pytest.fixture
def admin(server: PostgresServer, app_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(server.dsn_for("app"), autocommit=True) as conn:
        yield conn


def test_the_role_owns_nothing_and_is_no_superuser(admin):
    row = admin.execute(
        "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole,"
        " (SELECT count(*) FROM pg_class WHERE relowner = r.oid)"
        " + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)"
        " FROM pg_roles AS r WHERE r.rolname = %s",
        [ROLE],
    ).fetchone()
    assert row == (False, False, False, 0)


def test_enqueue_and_run_to_completion_work_with_dml_grants_only(as_app, admin):
    result = bbo.enqueue(DeleteDoneTodos, "todos", "id")
    finished = bbo.run_to_completion(result.operation.id)
    assert finished.status == OperationStatus.FINISHED
    assert finished.affected_tuple_count == 100
    remaining = admin.execute("SELECT count(*), count(*) FILTER (WHERE done) FROM todos")
    assert remaining.fetchone() == (200, 0)
    assert all(job.status.name == "SUCCEEDED" for job in bbo.list_jobs(finished.id))


def test_the_pipeline_stages_run_an_operation_with_dml_grants_only(as_app, admin, no_broker):
    operation = bbo.enqueue(DeleteDoneTodos, "tasks", "id").operation
    finished, runs = drive(operation.id)
    assert finished.status == OperationStatus.FINISHED and len(runs) >= 2
    remaining = admin.execute("SELECT count(*), count(*) FILTER (WHERE done) FROM tasks")
    assert remaining.fetchone() == (200, 0)


def test_a_table_the_role_may_not_read_is_refused_naming_the_select_privilege(as_app, admin):
    before = written_rows(admin)
    with pytest.raises(errors.TablePrivilegeMissing, match="SELECT") as caught:
        bbo.enqueue(DeleteDoneTodos, "secrets", "id")
    assert "GRANT SELECT ON public.secrets TO bbo_app" in str(caught.value)
    assert written_rows(admin) == before


def test_a_schema_the_role_may_not_use_is_refused_naming_the_usage_privilege(as_app, admin):
    before = written_rows(admin)
    with pytest.raises(errors.TablePrivilegeMissing, match="USAGE on schema hidden"):
        bbo.enqueue(DeleteDoneTodos, "hidden.items", "id")
    assert written_rows(admin) == before
