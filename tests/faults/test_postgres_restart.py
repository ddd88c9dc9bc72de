"""Postgres restarted under a running pipeline: the operations finish by themselves.

Four operations (one per worker thread) increment a visit counter on every row of their
table, in sub-batches, on a real ``dramatiq`` worker process with 4 threads. Midway, the
private server (never the shared one) is restarted with ``pg_ctl restart -m fast`` — or
``-m immediate``, a crash without a shutdown checkpoint — which breaks every connection of
the worker and of this process. Nothing is done by hand afterwards and no scheduler tick
runs: the runners give their jobs back at the checkpoint, the stages retry their
bookkeeping until Postgres answers again, and each operation's chain carries it to its end.

Afterwards every row has been visited exactly once (a sub-batch whose COMMIT was lost with
its connection was resumed from the checkpoint in its job row: not applied twice, not
skipped), no job failed, and no attempt was spent on the restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker
from psycopg import sql

import dramatiq_bbo as bbo
from dramatiq_bbo.migrations import migrate
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from dramatiq_bbo.testing.servers import PostgresServer
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import wait_until
from tests.servers import server_factory  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

TABLES = ("visits_a", "visits_b", "visits_c", "visits_d")
ROWS = 40_000  # per table: 160,000 rows in all
OPERATIONS = "bbo.background_operation_workers_cell_local"
JOBS = "bbo.background_operation_jobs_cell_local"


@pytest.fixture(scope="module")
def server(server_factory: Any) -> PostgresServer:  # noqa: F811
    """A private server this module may restart; ``max_connections`` covers the worker
    (4 threads, each a sub-batch and a bookkeeping connection, plus dramatiq-pg's pool),
    this process, and the connections a restart leaves to be replaced."""
    return server_factory(settings={"max_connections": 100})


@pytest.fixture
def database(server: PostgresServer) -> Iterator[str]:
    """A fresh migrated database on the private server, holding the broker's queue too."""
    name = f"restart_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = server.dsn_for(name)
    migrate(dsn)
    try:
        yield dsn
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def web_process(database: str) -> Iterator[None]:
    """This process as the application's web process: bbo configured, the pipeline set up
    on a broker of the database (so enqueue wakes each operation at once)."""
    bbo.configure(dsn=database)
    broker = PostgresBroker(url=database, results=False)
    bbo.setup(broker)
    yield
    broker.close()
    bbo.reset()


def restart(server: PostgresServer, mode: str) -> None:
    server.run(
        "pg_ctl",
        "-D",
        str(server.data_directory),
        "restart",
        "-w",
        "-t",
        "60",
        "-m",
        mode,
        "-l",
        str(server.log_path),
    )


def query(dsn: str, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    """One statement on a new connection: this process's own ones are broken by a restart."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(text, params).fetchall()  # type: ignore[arg-type]


def processed(dsn: str) -> int:
    try:
        return int(query(dsn, f"SELECT coalesce(sum(processed_tuple_count), 0) FROM {JOBS}")[0][0])
    except psycopg.OperationalError:  # restarting
        return 0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_operations_finish_unattended_after_a_postgres_restart_mid_run(
    mode: str, server: PostgresServer, database: str, web_process: None, tmp_path: Path
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        for table in TABLES:
            make_counter_table(conn, table, ROWS)
    workers = DramatiqWorkers(
        database,
        tmp_path / "dramatiq.log",
        threads=4,
        # No scheduler tick runs: an operation whose hand-off were lost would wait for its
        # lease and a tick (the fallback), and miss the deadline below.
        settings={"lease_seconds": 10, "max_running_jobs": 8},
    )
    workers.start()
    try:
        ids = [
            bbo.enqueue(
                PipelineVisit,
                table,
                "id",
                arguments={"sleep_ms": 10},
                batch_size=5_000,
                sub_batch_size=500,
                min_batch_size=1_000,
                max_batch_size=5_000,
            ).operation.id
            for table in TABLES
        ]
        total = ROWS * len(TABLES)
        wait_until(lambda: processed(database) >= total // 4, timeout=60, interval=0.1)
        before = processed(database)
        assert before < total * 3 // 4, "the run ended too early to restart it midway"
        restart(server, mode)

        def finished() -> bool:
            try:
                rows = query(database, f"SELECT status FROM {OPERATIONS} WHERE id = ANY(%s)", [ids])
            except psycopg.OperationalError:
                return False
            assert all(s != OperationStatus.FAILED for (s,) in rows), workers.tail()
            return len(rows) == len(ids) and all(s == OperationStatus.FINISHED for (s,) in rows)

        # resumed as soon as Postgres answers: well within one lease plus the run's rest
        wait_until(finished, timeout=45, interval=0.2)
    finally:
        workers.stop()
    # the restart hit running jobs, which were given back rather than failed
    assert "background_operation_connection_lost" in workers.log_text(), workers.tail()

    for table in TABLES:
        visits = query(database, f'SELECT visits, count(*) FROM "{table}" GROUP BY 1')
        assert visits == [(1, ROWS)], f"{table}: {visits} (visits, rows)"
    jobs = query(
        database,
        f"SELECT id, status, attempts, exception_class, metrics->>'interrupted_reason'"
        f" FROM {JOBS} ORDER BY id",
    )
    assert jobs and all(status == JobStatus.SUCCEEDED for _, status, *_ in jobs), jobs
    assert all(attempts == 1 for _, _, attempts, *_ in jobs), f"attempts spent: {jobs}"
