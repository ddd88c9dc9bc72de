"""The databases registry and the connections our own code uses.

A cell may hold several databases; each has a name (``"main"`` by default) and either a DSN
or an application-owned peewee database. The state tables live in the same database as the
rows an operation changes, which is what lets a sub-batch and its checkpoint commit in one
transaction.

Our code talks to Postgres through psycopg 3 connections taken from a small per-process pool
(pools are rebuilt after ``fork`` so dramatiq's worker processes never share a socket). The
pool checks every connection it lends, so one broken by a restart is dropped rather than lent
again, and a checkout fails within ``connect_timeout_seconds`` with libpq's reason.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import peewee
import psycopg
from playhouse.postgres_ext import Psycopg3Database
from psycopg_pool import ConnectionPool

from . import clock
from .errors import ConfigurationError, ConnectionFailed, UnknownDatabase
from .settings import Settings

DEFAULT_DATABASE = "main"


@dataclass
class DatabaseEntry:
    """One named database: its DSN, and the peewee database bound to it."""

    name: str
    dsn: str
    peewee: Any = None  # a playhouse Psycopg3Database; typed loosely to keep peewee optional
    _pool: ConnectionPool | None = field(default=None, repr=False)
    _pool_pid: int = field(default=0, repr=False)
    #: when the pool's last connect attempt failed, and why (for ConnectionFailed's message)
    _last_error: tuple[float, BaseException] | None = field(default=None, repr=False)


class Registry:
    """Names → databases, plus the settings in force. One per process (``REGISTRY``)."""

    def __init__(self) -> None:
        self._entries: dict[str, DatabaseEntry] = {}
        self._lock = threading.Lock()
        self.settings = Settings()

    # -- configuration -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every database and setting (closes pools); used by tests and reconfigure."""
        with self._lock:
            for entry in self._entries.values():
                if entry._pool is not None and entry._pool_pid == os.getpid():
                    entry._pool.close()
            self._entries.clear()
            self.settings = Settings()

    def add(self, name: str, *, dsn: str | None = None, database: Any = None) -> DatabaseEntry:
        """Register ``name`` from a DSN or from an application's peewee database."""
        if not name or len(name) > 63:
            raise ConfigurationError(f"database name must be 1..63 characters, got {name!r}")
        if (dsn is None) == (database is None):
            raise ConfigurationError(
                f"database {name!r}: give exactly one of dsn= or database= (a peewee database)"
            )
        if database is not None:
            dsn = dsn_of_peewee(database)
        assert dsn is not None
        validate_dsn(dsn)
        entry = DatabaseEntry(name=name, dsn=dsn, peewee=database)
        with self._lock:
            old = self._entries.get(name)
            if old is not None and old._pool is not None and old._pool_pid == os.getpid():
                old._pool.close()
            self._entries[name] = entry
        return entry

    def get(self, name: str = DEFAULT_DATABASE) -> DatabaseEntry:
        try:
            return self._entries[name]
        except KeyError:
            if not self._entries:
                raise ConfigurationError(
                    "dramatiq-bbo is not configured: call dramatiq_bbo.configure(dsn=...) first"
                ) from None
            raise UnknownDatabase(
                f"unknown database {name!r}; configured: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    # -- connections ---------------------------------------------------------------------------
    def pool(self, name: str = DEFAULT_DATABASE) -> ConnectionPool:
        entry = self.get(name)
        pid = os.getpid()
        if entry._pool is None or entry._pool_pid != pid:
            with self._lock:
                if entry._pool is None or entry._pool_pid != pid:
                    if entry._pool is not None:
                        # Inherited through fork: its sockets belong to the parent. Keep a
                        # reference so garbage collection never closes them from here.
                        _INHERITED_POOLS.append(entry._pool)
                    entry._pool = self._new_pool(entry)
                    entry._pool_pid = pid
        return entry._pool

    def _new_pool(self, entry: DatabaseEntry) -> ConnectionPool:
        """A pool that checks each connection as it lends it (so one broken by a restart or
        ``pg_terminate_backend`` is dropped, never lent: :func:`check_lent`), waits
        ``connect_timeout_seconds`` at most, and gives a failing server up as quickly: the
        next checkout tries afresh at once instead of behind a long backoff, so work resumes
        as soon as Postgres is back."""
        timeout = float(self.settings.connect_timeout_seconds)
        return ConnectionPool(
            entry.dsn,
            min_size=0,
            max_size=int(self.settings.pool_max_size),
            kwargs={"autocommit": True, "connect_timeout": libpq_connect_timeout(timeout)},
            connection_class=_recording_connection_class(entry),
            check=check_lent,
            name=f"bbo-{entry.name}",
            open=True,
            timeout=timeout,
            reconnect_timeout=timeout,
        )

    @contextlib.contextmanager
    def connection(self, name: str = DEFAULT_DATABASE) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection; open ``conn.transaction()`` for atomic work.

        A checkout that cannot get a connection within ``connect_timeout_seconds`` raises
        :class:`~dramatiq_bbo.errors.ConnectionFailed` with libpq's reason (connection
        refused, unknown host, authentication failed...), never the password."""
        pool = self.pool(name)
        started = time.monotonic()
        try:
            cm = pool.connection()
            conn = cm.__enter__()
        except Exception as exc:  # PoolTimeout (the pool's own attempts failed) and friends
            raise self._connection_failed(name, exc, started) from None
        try:
            if clock.carries_offset():
                _tell_clock_offset(conn)
            yield conn
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            cm.__exit__(None, None, None)

    def _connection_failed(self, name: str, exc: Exception, started: float) -> ConnectionFailed:
        """The error of a failed checkout, with the cause of the pool's last failed connect
        attempt if one failed during this checkout (else the pool's own reason: exhausted)."""
        entry = self.get(name)
        cause: BaseException = exc
        attempt = entry._last_error
        if attempt is not None and attempt[0] >= started - 1.0:
            cause = attempt[1]
        return ConnectionFailed(
            f"cannot connect to database {name!r} ({describe_dsn(entry.dsn)}) within "
            f"{float(self.settings.connect_timeout_seconds):g}s (connect_timeout_seconds): "
            f"{one_line(cause)}"
        )


REGISTRY = Registry()


def check_lent(conn: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection it is about to lend: raises when it is broken.

    A server that ends a session — ``pg_terminate_backend``, an idle timeout, a shutdown, a
    crash — sends it a last message or closes the socket, so the socket of a dead idle
    connection has something to read; a healthy idle one has nothing (this library's pooled
    connections LISTEN to nothing). Only a connection with something to read is checked with
    a round trip (``ConnectionPool.check_connection``, which raises if it is dead and
    consumes a harmless notice if not), so the check costs a ``poll()`` (no limit on the
    descriptor's number, unlike ``select()``), not a round trip per lend: a runner's job
    lends a pooled connection several times. A connection cut without a word (a network
    partition) passes, fails on first use, and the step is retried
    (:mod:`dramatiq_bbo.reconnect`), as it would if it broke just after a round-trip check."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


def _tell_clock_offset(conn: psycopg.Connection[Any]) -> None:
    """Give a lent connection the offset of the clock in force (see :mod:`.clock`); only
    ever called in a process where a test installed a simulated clock."""
    conn.execute(
        "SELECT set_config(%s, %s, false)", (clock.OFFSET_SETTING, repr(clock.offset_seconds()))
    )
    if not conn.autocommit:
        conn.commit()


#: pools inherited from a parent process, kept alive on purpose (see Registry.pool)
_INHERITED_POOLS: list[ConnectionPool] = []


def validate_dsn(dsn: str) -> None:
    """Refuse a malformed DSN early, with the parser's reason (never the password)."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(f"invalid DSN: {str(exc).strip()}") from None


def dsn_of_peewee(database: Any) -> str:
    """Rebuild a libpq DSN from a peewee Postgres database's connect parameters."""
    name = getattr(database, "database", None)
    params = dict(getattr(database, "connect_params", {}) or {})
    if name is None:
        raise ConfigurationError("the peewee database is not initialised (database name is None)")
    if "=" in str(name) or "://" in str(name):
        base = psycopg.conninfo.conninfo_to_dict(str(name))
    else:
        base = {"dbname": name}
    base.update({k: v for k, v in params.items() if v is not None})
    if "database" in base:
        base["dbname"] = base.pop("database")
    if "passwd" in base:
        base["password"] = base.pop("passwd")
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in base.items()})


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A standalone connection (CLI, migrate) with a typed error instead of a traceback,
    within ``connect_timeout_seconds`` unless ``connect_timeout`` is given."""
    validate_dsn(dsn)
    timeout = float(REGISTRY.settings.connect_timeout_seconds)
    kwargs.setdefault("connect_timeout", libpq_connect_timeout(timeout))
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"cannot connect ({describe_dsn(dsn)}) within {kwargs['connect_timeout']}s: "
            f"{one_line(exc)}"
        ) from None


def libpq_connect_timeout(seconds: float) -> int:
    """libpq's ``connect_timeout`` is whole seconds, and 2 at least (it reads 1 as 2)."""
    return max(2, math.ceil(seconds))


def describe_dsn(dsn: str) -> str:
    """Where a DSN points (host, port, database, user), for error messages: never the
    password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "an unparsable DSN"
    shown = [
        f"{key}={params[key]}" for key in ("host", "port", "dbname", "user") if params.get(key)
    ]
    return " ".join(shown) or "libpq defaults"


def one_line(exc: BaseException) -> str:
    """An error's message on one line (libpq's span several, with tabs)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _recording_connection_class(entry: DatabaseEntry) -> type[psycopg.Connection[Any]]:
    """A connection class whose failed connects are noted on ``entry``: the pool connects
    in a background thread and only says "timed out" to the waiting caller."""

    class RecordingConnection(psycopg.Connection):  # type: ignore[type-arg]
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                entry._last_error = (time.monotonic(), exc)
                raise

    RecordingConnection.__qualname__ = "RecordingConnection"  # as the pool's logs name it
    return RecordingConnection


#: what the peewee models of the state tables are bound through (dramatiq_bbo.contrib.models)
database_proxy = peewee.DatabaseProxy()

_peewee_registry: Registry | None = None
_databases: dict[str, peewee.Database] = {}  # name -> peewee database, for every registered name
_owned: set[str] = set()  # names whose database we built (and therefore close)


# -- binding ----------------------------------------------------------------------------------
def _peewee_database(dsn: str, connect_timeout: int) -> Psycopg3Database:
    """peewee hands its database argument to psycopg as a conninfo only when it starts with
    ``postgresql://`` (anything else is taken as a bare dbname), so spell every DSN as a URI:
    libpq takes any keyword as a URI query parameter, which keeps its defaults and env vars.
    A connect (also the one after a lost connection) waits ``connect_timeout`` at most."""
    if not dsn.startswith("postgresql://"):
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        query = urllib.parse.urlencode(
            {k: str(v) for k, v in params.items()}, quote_via=urllib.parse.quote
        )
        dsn = f"postgresql://?{query}"
    return Psycopg3Database(dsn, connect_timeout=connect_timeout)


def bind_registry(registry: Registry) -> None:
    """Build (or take the application's) peewee database of every registered name, and point
    ``database_proxy`` (what the state-table models use) at the default one; called by
    ``configure()``."""
    global _peewee_registry
    unbind()
    _peewee_registry = registry
    for name in registry.names():
        entry = registry.get(name)
        if entry.peewee is not None:
            _databases[name] = entry.peewee
        else:
            timeout = libpq_connect_timeout(float(registry.settings.connect_timeout_seconds))
            _databases[name] = _peewee_database(entry.dsn, timeout)
            _owned.add(name)
    if DEFAULT_DATABASE in _databases:
        database_proxy.initialize(_databases[DEFAULT_DATABASE])


def unbind() -> None:
    """Close the databases we built (never the application's) and uninitialise the proxy.

    peewee keeps one connection per thread and closes only the calling thread's here; the
    others close when garbage-collected (their thread ends, or this database is dropped).
    """
    global _peewee_registry
    for name in _owned:
        with contextlib.suppress(peewee.PeeweeException, psycopg.Error):
            _databases[name].close()
    _databases.clear()
    _owned.clear()
    _peewee_registry = None
    database_proxy.initialize(None)


def database_for(name: str = DEFAULT_DATABASE) -> peewee.Database:
    """The peewee database of a registered name (the error says what is configured)."""
    try:
        return _databases[name]
    except KeyError:
        if _peewee_registry is None:
            raise ConfigurationError(
                "dramatiq-bbo is not configured: call dramatiq_bbo.configure(dsn=...) first"
            ) from None
        _peewee_registry.get(name)  # raises UnknownDatabase
        raise
