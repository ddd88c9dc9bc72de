"""Applying the plain SQL files of ``schema/sql`` to a database.

The files are the source of truth. Each is idempotent and records itself in
``bbo.schema_migrations`` as its last statement, so ``psql -f`` of the files in order and
``dramatiq-bbo migrate`` give the same catalog. ``migrate`` adds what psql cannot: each file
runs in its own transaction, under a session advisory lock so concurrent migrates serialise
(the second finds nothing to do), and a database that is ahead of this code is refused.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import psycopg

from .db import DEFAULT_DATABASE, REGISTRY, connect
from .errors import ConfigurationError, MigrationError, SchemaNotInstalled, SchemaTooNew

_P = ParamSpec("_P")
_R = TypeVar("_R")

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


# -- the runtime check: a missing or older schema says "run migrate" -----------------------------
#: (pid, dsn) of the databases found current in this process: checked once, then trusted
_current: set[tuple[int, str]] = set()
_current_lock = threading.Lock()

#: a bbo relation or the bbo schema named in a Postgres "does not exist" error
_BBO_MISSING = re.compile(r'(relation|schema) "bbo(\.|")')


@functools.cache
def _library_versions() -> tuple[str, ...]:
    return tuple(f.version for f in migration_files())


def ensure_schema(database: str = DEFAULT_DATABASE) -> None:
    """Raise :class:`SchemaNotInstalled` (saying to run ``dramatiq-bbo migrate``) when the bbo
    schema of ``database`` is missing or older than this library. Checked once per process
    and database: the first call costs one pooled connection and two tiny queries, the later
    ones a set lookup. A schema *newer* than the library is let through here (a rolling
    deploy migrates before the last old worker stops); ``migrate`` refuses it.

    An unconfigured or unknown database is left to the caller's own error, and a role that
    may not read ``bbo.schema_migrations`` is trusted (a missing table still surfaces as
    :class:`SchemaNotInstalled` through :func:`schema_errors`)."""
    try:
        entry = REGISTRY.get(database)
    except ConfigurationError:
        return
    key = (os.getpid(), entry.dsn)
    if key in _current:
        return
    try:
        with REGISTRY.connection(database) as conn:
            applied = set(applied_versions(conn))
    except psycopg.errors.InsufficientPrivilege:
        applied = set(_library_versions())
    missing = [v for v in _library_versions() if v not in applied]
    if missing:
        raise SchemaNotInstalled(schema_hint(database, entry.dsn, missing, bool(applied)))
    with _current_lock:
        _current.add(key)


def schema_hint(database: str, dsn: str, missing: list[str], installed: bool) -> str:
    """What is wrong with the schema of ``database`` and the command that fixes it."""
    if installed:
        what = (
            f"the dramatiq-bbo schema of database {database!r} is older than this dramatiq-bbo "
            f"(migrations {', '.join(missing)} are not applied)"
        )
    else:
        what = f"the dramatiq-bbo schema is not installed in database {database!r}"
    return f"{what}: run `dramatiq-bbo migrate --dsn {_shown_dsn(dsn)}`, then retry"


def _shown_dsn(dsn: str) -> str:
    """The DSN for a shell command line, without its password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<your DSN>"
    params.pop("password", None)
    text = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
    return "'" + text.replace("'", "'\\''") + "'"


def forget_checked_schemas() -> None:
    """Check every database again at its next use (after a migrate in this process)."""
    with _current_lock:
        _current.clear()


@contextlib.contextmanager
def schema_errors(database: str = DEFAULT_DATABASE) -> Iterator[None]:
    """Turn Postgres's "relation bbo.... does not exist" into :class:`SchemaNotInstalled`
    with the command that fixes it (a schema dropped after the once-per-process check, or
    reached through a caller's own connection)."""
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        if not _BBO_MISSING.search(str(exc)):
            raise
        forget_checked_schemas()
        try:
            dsn = REGISTRY.get(database).dsn
        except ConfigurationError:
            dsn = ""
        raise SchemaNotInstalled(
            f"{str(exc).strip()}; " + schema_hint(database, dsn, [], installed=False)
        ) from exc


def requires_schema(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a public entry point taking ``database=``: :func:`ensure_schema` first, and
    :func:`schema_errors` around the call."""

    @functools.wraps(fn)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        database = str(kwargs.get("database") or DEFAULT_DATABASE)
        ensure_schema(database)
        with schema_errors(database):
            return fn(*args, **kwargs)

    return checked
