"""Real ``dramatiq`` worker processes for the pipeline acceptance tests.

:class:`DramatiqWorkers` runs ``python -m dramatiq tests.acceptance.pipeline_app`` exactly as
an operator would, in its own process group (so nothing it forks can outlive the test), with
its output in a log file. ``start()`` returns once the workers are really listening:

1. every worker process logged "Worker process is ready for action." (dramatiq logs it after
   ``Worker.start()``, i.e. after the consumer threads started), and
2. Postgres shows, among the broker's connections (``application_name = 'dramatiq-pg'``)
   opened since the group started, one per consumer (each process has two: the queue and its
   delay queue ``.DQ``) that ran a statement: a consumer opens its LISTEN connection first and
   scans ``dramatiq.queue`` on it right after ``LISTEN``.

A message written before that is not lost either (each consumer scans the queue table after
``LISTEN``); readiness only matters for latency measurements.

``stop()`` sends SIGTERM to the dramatiq master (which forwards it to its workers: a graceful
shutdown), waits, then SIGKILLs the whole process group; a test that checks the graceful stop
calls it. At teardown, ``discard()`` SIGKILLs the group at once: the test is over, there is
nothing to hand over, and a graceful stop costs about two seconds per group.
The :func:`dramatiq_workers` fixture starts groups on demand and registers their logs on the
test item; ``tests/acceptance/conftest.py`` appends their tails to a failing test's report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.pipeline_app"
QUEUE = "background_operations"
READY_LINE = "Worker process is ready for action."


class WorkerStartFailed(AssertionError):
    pass


class DramatiqWorkers:
    """One ``dramatiq`` command: a master process and ``processes`` worker processes."""

    def __init__(
        self,
        dsn: str,
        log_path: Path,
        *,
        processes: int = 1,
        threads: int = 4,
        settings: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
        app: str = APP,
    ) -> None:
        self.dsn = dsn
        self.app = app
        self.log_path = log_path
        self.processes = processes
        self.threads = threads
        self.settings = dict(settings or {})
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._started_at: Any = None

    # -- life cycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            self.app,
            "--processes",
            str(self.processes),
            "--threads",
            str(self.threads),
            "--queues",
            QUEUE,
            # a graceful stop that hangs is a bug the test should see, not wait 10 minutes for
            "--worker-shutdown-timeout",
            "30000",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BBO_APP_DSN"] = self.dsn
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        for name, value in self.settings.items():
            env[f"BBO_APP_{name.upper()}"] = str(value)
        env.update(self.extra_env)
        return env

    def start(self, *, timeout: float = 60.0) -> DramatiqWorkers:
        assert self.proc is None, "already started"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {' '.join(self.command())}\n".encode())
        self._log.flush()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._started_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and process group: killpg reaches all
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise WorkerStartFailed(
                    f"dramatiq exited with {self.proc.returncode} while starting:\n{self.tail()}"
                )
            if self.log_text().count(READY_LINE) >= self.processes and (
                self._scanning_consumers() >= 2 * self.processes
            ):
                return
            if time.monotonic() > deadline:
                raise WorkerStartFailed(f"dramatiq not ready within {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def _scanning_consumers(self) -> int:
        """Broker connections opened since this group started that ran a statement.

        A consumer's first connection is its LISTEN connection, on which it then scans the
        queue table (it shows ``COMMIT`` afterwards); its second one, for claiming messages,
        shows nothing until it claims one — which also comes after the scan."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'dramatiq-pg'"
                " AND backend_start >= %s AND query <> ''",
                [self._started_at],
            ).fetchone()
        return int(row[0]) if row else 0

    def discard(self) -> None:
        """SIGKILL the whole group now (teardown: no graceful stop to wait for)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, *, timeout: float = 40.0) -> int | None:
        """Graceful stop (SIGTERM), then SIGKILL of the whole group; the master's exit code."""
        proc, self.proc = self.proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._note(f"dramatiq did not stop within {timeout}s: SIGKILL to its group")
            else:
                code = proc.returncode
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if code is None:
                code = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def wait_exit(self, *, timeout: float = 40.0) -> int:
        """Wait for the master to exit by itself (after a signal the test sent)."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    # -- processes ----------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The worker processes (the master's children)."""
        if self.proc is None:
            return []
        try:
            return [child.pid for child in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def signal_master(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill_workers(self) -> list[int]:
        """``kill -9`` every worker process (not the master); their pids."""
        pids = self.worker_pids()
        assert pids, "no worker process to kill"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    # -- logs ---------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _note(self, text: str) -> None:
        if self._log is not None:
            self._log.write(f"[test harness] {text}\n".encode())
            self._log.flush()


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in process group ``pgid`` and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


@pytest.fixture
def dramatiq_workers(
    dsn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DramatiqWorkers]]:
    """``start(processes=1, threads=4, settings={...}) -> DramatiqWorkers`` on this test's
    database; every group started is stopped at teardown (before the database is dropped)."""
    groups: list[DramatiqWorkers] = []
    request.node.stash[WORKER_GROUPS] = groups

    def start(**kwargs: Any) -> DramatiqWorkers:
        log = tmp_path / f"dramatiq-{len(groups) + 1}.log"
        group = DramatiqWorkers(dsn, log, **kwargs)
        groups.append(group)
        return group.start()

    yield start
    for group in groups:
        group.discard()


WORKER_GROUPS: pytest.StashKey[list[DramatiqWorkers]] = pytest.StashKey()
