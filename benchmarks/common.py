"""What both benchmark scripts need: a Postgres server, a fresh migrated database, real
``dramatiq`` worker processes running :mod:`benchmarks.app`, and the printing of results."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dramatiq_bbo.migrations import migrate

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "background_operations"
READY_LINE = "Worker process is ready for action."


@contextlib.contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    """An admin DSN: ``dsn`` as given, else a throw-away embedded Postgres."""
    if dsn:
        yield dsn
        return
    from dramatiq_bbo.testing.embedded import EmbeddedPostgres

    print("starting an embedded Postgres...", file=sys.stderr)
    with EmbeddedPostgres() as server:
        yield server.dsn


@contextlib.contextmanager
def fresh_database(admin_dsn: str, prefix: str = "bbo_bench") -> Iterator[str]:
    """A new database with the bbo schema (and dramatiq-pg's queue), dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    dsn = psycopg.conninfo.make_conninfo("", **params)
    try:
        migrate(dsn)
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def make_broker(dsn: str) -> Any:
    """The application's dramatiq-pg broker: dramatiq's default middleware minus Prometheus
    (its exposition server would bind port 9191, which a concurrent test run may hold)."""
    from dramatiq_pg import PostgresBroker

    from dramatiq_bbo.pipeline.broker import default_middleware

    return PostgresBroker(url=dsn, results=False, middleware=default_middleware())


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


class Workers:
    """``python -m dramatiq benchmarks.app`` in its own process group, log in a temp file."""

    def __init__(self, dsn: str, *, processes: int = 1, threads: int = 4) -> None:
        self.dsn = dsn
        self.processes = processes
        self.threads = threads
        self.log = Path(tempfile.mkstemp(prefix="bbo-bench-workers-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Workers:
        env = dict(os.environ, BBO_BENCH_DSN=self.dsn, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        command = [
            sys.executable, "-m", "dramatiq", "benchmarks.app",
            "--processes", str(self.processes), "--threads", str(self.threads),
            "--queues", QUEUE,
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while self.log.read_text(errors="replace").count(READY_LINE) < self.processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                self.__exit__()
                raise RuntimeError(f"dramatiq workers did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 50 values is the largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        pairs = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
