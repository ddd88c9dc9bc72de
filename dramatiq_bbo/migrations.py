"""Applying the plain SQL files of ``schema/sql`` to a database.

The files are the source of truth. Each is idempotent and records itself in
``bbo.schema_migrations`` as its last statement, so ``psql -f`` of the files in order and
``dramatiq-bbo migrate`` give the same catalog. ``migrate`` adds what psql cannot: each file
runs in its own transaction, under a session advisory lock so concurrent migrates serialise
(the second finds nothing to do), and a database that is ahead of this code is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .db import connect
from .errors import MigrationError, SchemaNotInstalled, SchemaTooNew

#: advisory lock key held while migrating ("bbo-migrate" as a 63-bit constant)
MIGRATE_LOCK_KEY = 0x62626F2D6D6967

_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass
class MigrationStatus:
    applied: list[str] = field(default_factory=list)
    pending: list[MigrationFile] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


@dataclass
class MigrationReport:
    applied_now: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.applied_now


def schema_directory() -> Path:
    """Where the SQL files are: inside the installed wheel, or ``schema/sql`` in a checkout."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "schema_sql", package_dir.parent / "schema" / "sql"):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise MigrationError(f"the schema SQL files are missing (looked in {package_dir})")


def migration_files(directory: Path | None = None) -> list[MigrationFile]:
    directory = directory or schema_directory()
    files = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"unexpected file in the schema directory: {path.name}")
        files.append(MigrationFile(match.group(1), match.group(2), path))
    versions = [f.version for f in files]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two schema files share a version number: {versions}")
    return files


def applied_versions(conn: psycopg.Connection) -> list[str]:
    row = conn.execute("SELECT to_regclass('bbo.schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return []
    return [r[0] for r in conn.execute("SELECT version FROM bbo.schema_migrations ORDER BY 1")]


def status(dsn: str, directory: Path | None = None) -> MigrationStatus:
    files = migration_files(directory)
    with connect(dsn, autocommit=True) as conn:
        applied = applied_versions(conn)
    known = {f.version for f in files}
    return MigrationStatus(
        applied=[v for v in applied if v in known],
        pending=[f for f in files if f.version not in applied],
        unknown=[v for v in applied if v not in known],
    )


def migrate(dsn: str, directory: Path | None = None) -> MigrationReport:
    """Apply every pending file in order; safe to run concurrently and repeatedly."""
    files = migration_files(directory)
    known = {f.version for f in files}
    report = MigrationReport()
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        try:
            applied = applied_versions(conn)
            unknown = [v for v in applied if v not in known]
            if unknown:
                raise SchemaTooNew(
                    f"the database has schema migration(s) {', '.join(unknown)} that this "
                    f"dramatiq-bbo does not know (it knows up to {files[-1].version}); "
                    "upgrade dramatiq-bbo before running it against this database"
                )
            for file in files:
                if file.version in applied:
                    report.already_applied.append(file.version)
                    continue
                _apply_one(conn, file)
                report.applied_now.append(file.version)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
    return report


def _apply_one(conn: psycopg.Connection, file: MigrationFile) -> None:
    try:
        with conn.transaction():
            # Quiet the "already exists, skipping" notices of idempotent DDL.
            conn.execute("SET LOCAL client_min_messages = warning")
            conn.execute(file.sql().encode("utf-8"))
            recorded = conn.execute(
                "SELECT 1 FROM bbo.schema_migrations WHERE version = %s", (file.version,)
            ).fetchone()
            if recorded is None:
                raise MigrationError(
                    f"{file.path.name} did not record itself in bbo.schema_migrations"
                )
    except psycopg.Error as exc:
        raise MigrationError(
            f"{file.path.name} failed and was rolled back: {str(exc).strip()}"
        ) from None


def require_current(conn: psycopg.Connection, directory: Path | None = None) -> None:
    """Refuse to run against a database whose schema is missing, behind, or ahead."""
    files = migration_files(directory)
    applied = set(applied_versions(conn))
    pending = [f.version for f in files if f.version not in applied]
    if pending:
        raise SchemaNotInstalled(
            f"schema migrations {', '.join(pending)} are not applied: run `dramatiq-bbo migrate`"
        )
    unknown = sorted(applied - {f.version for f in files})
    if unknown:
        raise SchemaTooNew(
            f"the database has schema migration(s) {', '.join(unknown)} unknown to this "
            "dramatiq-bbo; upgrade it"
        )
