"""Server-state health indicators, each against a real server in that state.

Every state is produced for real on a private server (dramatiq_bbo.testing.servers), not mocked: an
autovacuum worker slowed down by its cost settings, an anti-wraparound vacuum forced by
burning transaction ids, an archiver whose ``archive_command`` fails, a streaming standby
whose replay is paused, a burst of writes. These tests ignore ``BBO_TEST_DSN``: they start the
servers they need. Select them with ``-m server_states``.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dramatiq_bbo.health.archive import ArchiveBacklog
from dramatiq_bbo.health.autovacuum import Autovacuum
from dramatiq_bbo.health.base import Indicator, Result, Signal
from dramatiq_bbo.health.replication import ReplicationLag
from dramatiq_bbo.health.saturation import ConnectionSaturation
from dramatiq_bbo.health.wal_rate import WalRate
from dramatiq_bbo.testing.programs import process_exited
from dramatiq_bbo.testing.servers import PostgresServer
from tests.helpers import wait_until
from tests.servers import (
    ServerFactory,
    connect,
    context,
    create_plain_role,
    operation_record,
    server_factory,  # noqa: F401 - the fixture
)

pytestmark = pytest.mark.server_states

# Per-table settings that make autovacuum take a table at once and crawl through it: every
# page read sleeps up to 4 x 100 ms, so a vacuum of a few hundred pages lasts minutes.
_SLOW_AUTOVACUUM = (
    "autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0, "
    "autovacuum_vacuum_insert_threshold = -1, "
    "autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1"
)


def _check(indicator: Indicator, conn: psycopg.Connection[Any], **kwargs: Any) -> Result:
    result = indicator.check(context(conn, **kwargs))
    assert result.indicator == indicator.name
    return result


def _generate_segments(conn: psycopg.Connection[Any], count: int) -> None:
    """Finish ``count`` WAL segments: each switch after a write closes one."""
    conn.execute("CREATE TABLE IF NOT EXISTS wal_filler (id serial, payload text)")
    for _ in range(count):
        conn.execute("INSERT INTO wal_filler (payload) VALUES (repeat('x', 100))")
        conn.execute("SELECT pg_switch_wal()")


def _ready_files(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- autovacuum ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def autovacuum_server(server_factory: ServerFactory) -> PostgresServer:  # noqa: F811
    return server_factory({"autovacuum_naptime": 1, "autovacuum_max_workers": 4})


def test_autovacuum_on_the_table_stops_and_other_tables_stay_normal(
    autovacuum_server: PostgresServer,
) -> None:
    indicator = Autovacuum()
    with connect(autovacuum_server) as conn:
        conn.execute(
            f"CREATE TABLE todos (id int PRIMARY KEY, body text) WITH ({_SLOW_AUTOVACUUM})"
        )
        conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
        conn.execute("INSERT INTO other SELECT generate_series(1, 10)")
        conn.execute(
            "INSERT INTO todos SELECT i, repeat('x', 100) FROM generate_series(1, 20000) i"
        )
        assert _check(indicator, conn).signal is Signal.NORMAL
        conn.execute("UPDATE todos SET body = repeat('y', 100)")  # 20 000 dead tuples

        stop = wait_until(
            lambda: (r := _check(indicator, conn)).stop and r, timeout=30, interval=0.2
        )
        assert "autovacuum on public.todos" in stop.reason
        assert "wraparound" not in stop.reason

        other = _check(indicator, conn, table_name="public.other")
        assert other.signal is Signal.NORMAL
        assert other.reason == "no autovacuum on public.other"

        # An ordinary vacuum lets work go on when only anti-wraparound vacuums should stop it.
        relaxed = _check(indicator, conn, settings={"autovacuum_stop_on_any": False})
        assert relaxed.signal is Signal.NORMAL
        assert "(not a stop)" in relaxed.reason

        gone = _check(indicator, conn, table_name="public.missing")
        assert gone.signal is Signal.NOT_AVAILABLE

    # A role that may not read other sessions' activity still sees a vacuum holding the lock.
    role = create_plain_role(autovacuum_server)
    with connect(autovacuum_server, role) as plain:
        result = _check(indicator, plain)
        assert result.signal is Signal.STOP
        assert "autovacuum or manual" in result.reason
        assert "public.todos" in result.reason


def test_anti_wraparound_autovacuum_is_named_in_the_reason(
    autovacuum_server: PostgresServer,
) -> None:
    indicator = Autovacuum()
    with connect(autovacuum_server) as conn:
        # Autovacuum never takes this table on its own; only its age can force a vacuum.
        conn.execute(
            "CREATE TABLE old_rows (id int PRIMARY KEY, body text) WITH ("
            "autovacuum_enabled = false, autovacuum_freeze_max_age = 100000, "
            "autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)"
        )
        conn.execute(
            "INSERT INTO old_rows SELECT i, repeat('x', 100) FROM generate_series(1, 20000) i"
        )
        assert _check(indicator, conn, table_name="public.old_rows").signal is Signal.NORMAL
        # Age the table past its freeze_max_age: 110 000 subtransactions, one xid each.
        conn.execute("CREATE TABLE xid_burner (i int) WITH (autovacuum_enabled = false)")
        conn.execute(
            "DO $$ BEGIN FOR i IN 1..110000 LOOP BEGIN INSERT INTO xid_burner VALUES (i); "
            "EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$"
        )

        stop = wait_until(
            lambda: (r := _check(indicator, conn, table_name="public.old_rows")).stop and r,
            timeout=30,
            interval=0.2,
        )
        assert "autovacuum (to prevent wraparound) on public.old_rows" in stop.reason
        # Even with stop_on_any off, an anti-wraparound vacuum stops work.
        strict = _check(
            indicator,
            conn,
            table_name="public.old_rows",
            settings={"autovacuum_stop_on_any": False},
        )
        assert strict.stop

    role = create_plain_role(autovacuum_server)
    with connect(autovacuum_server, role) as plain:
        hidden = _check(indicator, plain, table_name="public.old_rows")
        assert hidden.stop
        assert "to prevent wraparound" in hidden.reason  # inferred from relfrozenxid's age


# -- WAL archive backlog ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def archiving_server(server_factory: ServerFactory) -> PostgresServer:  # noqa: F811
    return server_factory({"archive_mode": "on", "archive_command": "/bin/false"})


@pytest.fixture(scope="module")
def plain_server(server_factory: ServerFactory) -> PostgresServer:  # noqa: F811
    """Postgres defaults: archiving off, no standby."""
    return server_factory()


def test_archive_backlog_stops_while_archive_command_fails(
    archiving_server: PostgresServer,
) -> None:
    indicator = ArchiveBacklog()
    role = create_plain_role(archiving_server)
    with connect(archiving_server) as conn, connect(archiving_server, role) as plain:
        _generate_segments(conn, 4)
        wait_until(lambda: _ready_files(conn) >= 4, timeout=10)

        stop = _check(indicator, conn, settings={"max_archive_backlog_segments": 2})
        assert stop.signal is Signal.STOP, stop
        assert "WAL segments wait for archival (.ready files, oldest 0000" in stop.reason
        assert "archive_command failed" in stop.reason
        assert _check(indicator, conn).signal is Signal.NORMAL  # 4 <= 42 by default

        # A role without pg_monitor may not list archive_status, and nothing was ever archived
        # for pg_stat_archiver to count from.
        hidden = _check(indicator, plain, settings={"max_archive_backlog_segments": 2})
        assert hidden.signal is Signal.NOT_AVAILABLE, hidden
        assert "pg_monitor" in hidden.reason

        # Archiving works again: the backlog drains.
        archiving_server.reload({"archive_command": "/bin/true"})
        wait_until(lambda: _ready_files(conn) == 0, timeout=20, interval=0.1)
        assert _check(indicator, conn, settings={"max_archive_backlog_segments": 2}).signal is (
            Signal.NORMAL
        )

        # It fails again: now pg_stat_archiver has a last archived segment to count from.
        archiving_server.reload({"archive_command": "/bin/false"})
        _generate_segments(conn, 4)
        estimated = wait_until(
            lambda: (
                (r := _check(indicator, plain, settings={"max_archive_backlog_segments": 2})).stop
                and r
            ),
            timeout=10,
        )
        assert "estimated from pg_stat_archiver" in estimated.reason


def test_the_evaluator_stops_on_the_archive_backlog(archiving_server: PostgresServer) -> None:
    """The built-in indicators, found by name and run by the evaluator on its own pool."""
    import dramatiq_bbo as bbo
    from dramatiq_bbo import health
    from dramatiq_bbo.db import DEFAULT_DATABASE

    archiving_server.reload({"archive_command": "/bin/false"})
    with connect(archiving_server) as conn:
        _generate_segments(conn, 2)
        wait_until(lambda: _ready_files(conn) >= 2, timeout=10)
    names = ["autovacuum", "wal_archive", "wal_rate", "replication_lag"]
    bbo.configure(dsn=archiving_server.dsn)
    try:
        health.clear_cache()
        evaluation = health.evaluate(
            operation_record("public.wal_filler", DEFAULT_DATABASE),
            indicators=names,
            settings={"max_archive_backlog_segments": 1},
        )
    finally:
        bbo.reset()
        health.clear_cache()
    assert [r.indicator for r in evaluation.results] == names
    assert all(r.signal is not Signal.UNKNOWN for r in evaluation.results), evaluation
    assert evaluation.stop is not None and evaluation.stop.indicator == "wal_archive"


def test_archive_backlog_is_not_available_when_archiving_is_off(
    plain_server: PostgresServer,
) -> None:
    with connect(plain_server) as conn:
        result = _check(ArchiveBacklog(), conn, settings={"max_archive_backlog_segments": 0})
    assert result.signal is Signal.NOT_AVAILABLE
    assert result.reason == "archive_mode is off"


# -- replication lag -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replication(server_factory: ServerFactory) -> tuple[PostgresServer, PostgresServer]:  # noqa: F811
    primary = server_factory({"wal_level": "replica", "max_wal_senders": 4})
    standby = server_factory.standby(primary)
    return primary, standby


def test_replication_lag_stops_while_replay_is_paused_and_recovers_when_resumed(
    replication: tuple[PostgresServer, PostgresServer],
) -> None:
    primary, standby = replication
    indicator = ReplicationLag()
    limits = {"max_replication_lag_bytes": 1024 * 1024}
    with connect(primary) as conn, connect(standby) as replica:
        wait_until(lambda: "1 standby(s)" in _check(indicator, conn, settings=limits).reason)
        assert _check(indicator, conn, settings=limits).signal is Signal.NORMAL

        replica.execute("SELECT pg_wal_replay_pause()")
        wait_until(
            lambda: (
                replica.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() == ("paused",)
            )
        )
        conn.execute("CREATE TABLE lagging (id int, body text)")
        conn.execute(
            "INSERT INTO lagging SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i"
        )  # about 5 MiB of WAL the standby receives but does not replay
        stop = wait_until(
            lambda: (r := _check(indicator, conn, settings=limits)).stop and r, timeout=20
        )
        assert "walreceiver" in stop.reason and "behind" in stop.reason

        replica.execute("SELECT pg_wal_replay_resume()")
        normal = wait_until(
            lambda: (r := _check(indicator, conn, settings=limits)).signal is Signal.NORMAL and r,
            timeout=20,
        )
        assert "most behind" in normal.reason
        assert replica.execute("SELECT count(*) FROM lagging").fetchone() == (20000,)

        assert _check(indicator, replica).signal is Signal.NOT_AVAILABLE
        assert _check(ArchiveBacklog(), replica).signal is Signal.NOT_AVAILABLE
        assert _check(WalRate(), replica).signal is Signal.NOT_AVAILABLE

    role = create_plain_role(primary)
    with connect(primary, role) as plain:
        hidden = _check(indicator, plain)
        assert hidden.signal is Signal.NOT_AVAILABLE
        assert "pg_read_all_stats" in hidden.reason


def test_replication_lag_is_normal_without_standby(plain_server: PostgresServer) -> None:
    with connect(plain_server) as conn:
        result = _check(ReplicationLag(), conn, settings={"max_replication_lag_bytes": 0})
    assert result.signal is Signal.NORMAL
    assert result.reason == "no standby"


# -- WAL generation rate ---------------------------------------------------------------------


def test_wal_rate_stops_after_a_burst_of_writes(plain_server: PostgresServer) -> None:
    indicator = WalRate()
    tiny = {"max_wal_bytes_per_second": 1024, "min_wal_rate_interval_seconds": 0}
    with connect(plain_server) as conn:
        first = _check(indicator, conn, settings=tiny)
        assert (first.signal, first.reason) == (Signal.NORMAL, "first sample")
        conn.execute("CREATE TABLE burst (id int, body text)")
        conn.execute(
            "INSERT INTO burst SELECT i, repeat('x', 100) FROM generate_series(1, 20000) i"
        )
        stop = _check(indicator, conn, settings=tiny)
    assert stop.signal is Signal.STOP, stop
    assert "WAL written at" in stop.reason


def test_wal_rate_is_normal_when_idle_under_a_high_threshold(plain_server: PostgresServer) -> None:
    indicator = WalRate()
    huge = {"max_wal_bytes_per_second": 1024**4, "min_wal_rate_interval_seconds": 0}
    with connect(plain_server) as conn:
        assert _check(indicator, conn, settings=huge).reason == "first sample"
        result = _check(indicator, conn, settings=huge)
        assert result.signal is Signal.NORMAL, result
        # Too soon after the previous sample: the previous answer stands, no new window.
        again = _check(indicator, conn, settings={**huge, "min_wal_rate_interval_seconds": 60})
        assert again == result


# -- the launcher itself ---------------------------------------------------------------------


def test_private_server_takes_settings_restarts_and_leaves_nothing_behind() -> None:
    with PostgresServer(settings={"work_mem": "7MB", "archive_mode": "on"}) as server:
        with connect(server) as conn:
            assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
            assert conn.execute("SHOW archive_mode").fetchone() == ("on",)
        pid = int((server.data_directory / "postmaster.pid").read_text().split()[0])
        server.restart({"archive_mode": "off", "max_connections": 20})
        with connect(server) as conn:
            assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
            assert conn.execute("SHOW max_connections").fetchone() == ("20",)
            assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
        restarted = int((server.data_directory / "postmaster.pid").read_text().split()[0])
        assert restarted != pid
        directory = server.directory
    assert not directory.exists()
    assert process_exited(restarted)
    server.stop()  # idempotent


# -- connection saturation -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(server_factory: ServerFactory) -> PostgresServer:  # noqa: F811
    return server_factory(settings={"max_connections": 8})


def test_saturation_stops_on_a_server_filled_to_its_small_max_connections(
    small_server: PostgresServer,
) -> None:
    """A real server with max_connections = 8, filled by test connections: the indicator
    stops at the default ratio (0.9) and is normal again once they are closed."""
    held: list[psycopg.Connection[Any]] = []
    try:
        while True:
            try:
                held.append(connect(small_server))
            except psycopg.OperationalError:
                break  # the server refused one more: it is full
        assert len(held) >= 5
        full = _check(ConnectionSaturation(), held[0], settings={"max_connection_ratio": 0.9})
        assert full.signal is Signal.STOP, full.reason
        assert "max_connections 8" in full.reason
        for conn in held[1:]:
            conn.close()
        del held[1:]
        relieved = _check(ConnectionSaturation(), held[0], settings={"max_connection_ratio": 0.9})
        assert relieved.signal is Signal.NORMAL, relieved.reason
    finally:
        for conn in held:
            conn.close()
