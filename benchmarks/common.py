"""What every benchmark section needs: a Postgres server, a fresh migrated database, real
``dramatiq`` worker processes running :mod:`benchmarks.app`, the machine's description, and
the results table (one :class:`Row` per figure, each with its baseline from the same run)."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dramatiq_bbo.migrations import migrate

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "background_operations"
READY_LINE = "Worker process is ready for action."
#: health indicators off on every side that does not measure health: the benchmark's own
#: fills and full-speed deletes would trip them (autovacuum woken, WAL rate) and the figure
#: would measure the hold
DISABLED_INDICATORS = ("autovacuum", "wal_rate")


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

    def __init__(
        self, dsn: str, *, processes: int = 1, threads: int = 4, env: dict[str, str] | None = None
    ) -> None:
        self.dsn = dsn
        self.extra_env = env or {}
        self.processes = processes
        self.threads = threads
        self.log = Path(tempfile.mkstemp(prefix="bbo-bench-workers-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Workers:
        env = dict(os.environ, BBO_BENCH_DSN=self.dsn, PYTHONUNBUFFERED="1", **self.extra_env)
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

    def worker_pids(self) -> list[int]:
        """The worker processes dramatiq forked (children of its main process)."""
        if self.proc is None:
            return []
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in path.read_text().split()]
        return []

    def rss_bytes(self) -> int:
        """Resident memory of the worker processes, summed (Linux ``/proc``; 0 elsewhere)."""
        return sum(rss_bytes(pid) for pid in self.worker_pids())

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


def rss_bytes(pid: int) -> int:
    """``VmRSS`` of one process, in bytes (0 when it cannot be read)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine(dsn: str) -> dict[str, str]:
    """What the figures depend on: cores, memory, Postgres and Python versions."""
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cores (nproc)": str(os.cpu_count()),
        "memory": memory,
        "Postgres": server_version(dsn),
        "Python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


@dataclass
class Row:
    """One figure of the results table: the measure, its baseline measured in the same run
    (or a fixed goal when nothing can serve as one), their ratio, and the goal."""

    section: str
    measure: str
    value: float | int | str
    unit: str = ""
    baseline: float | int | str = ""
    baseline_name: str = ""
    ratio: float | None = None
    goal: str = ""


def growth_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) against log(size): 0 flat, 1 linear."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(t, 1e-9)) for t in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den if den else 0.0


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index (Σx)² ÷ (n·Σx²): 1 when all equal, 1/n when one takes all."""
    square_sum = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * square_sum) if square_sum else 1.0


def progress(text: str) -> None:
    """A progress line on stderr (the results go to stdout)."""
    print(text, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 50 values is the largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], left: Sequence[int] = (0,)
) -> None:
    """An aligned text table; the columns of ``left`` flush left, the others right."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        pairs = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in pairs))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Context:
    """What ``benchmarks.run`` hands every section: the server, the size of the run."""

    admin_dsn: str
    quick: bool = False
    threads: int = 4
    repeat: int = 3

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` under ``--quick``, else ``full``."""
        return quick if self.quick else full


@contextlib.contextmanager
def bench_database(
    ctx: Context, prefix: str, *, broker: bool = True, **settings: Any
) -> Iterator[str]:
    """A fresh database, ``bbo.configure``\\ d on it in this process (the indicators of
    :data:`DISABLED_INDICATORS` off unless ``health=`` says otherwise) and, with ``broker``,
    ``bbo.setup`` on a dramatiq-pg broker as a web process does (so enqueue wakes the
    pipeline); everything reset and dropped afterwards."""
    import dramatiq_bbo as bbo

    settings.setdefault("health", {"disabled_indicators": list(DISABLED_INDICATORS)})
    with fresh_database(ctx.admin_dsn, prefix) as dsn:
        bbo.configure(dsn=dsn, **settings)
        made = make_broker(dsn) if broker else None
        try:
            if made is not None:
                bbo.setup(made)
            yield dsn
        finally:
            bbo.reset()
            if made is not None:
                with contextlib.suppress(Exception):
                    made.close()


def wait_finished(operation_id: Any, timeout: float, poll: float = 0.01) -> Any:
    """The operation's record once it is no longer unfinished (RuntimeError past timeout)."""
    import dramatiq_bbo as bbo

    deadline = time.monotonic() + timeout
    while True:
        current = bbo.get_operation(operation_id)
        if not current.unfinished:
            return current
        if time.monotonic() > deadline:
            raise RuntimeError(f"operation {operation_id} did not finish in {timeout}s: {current}")
        time.sleep(poll)


def execute(dsn: str, statement: Any, params: Any = None) -> None:
    """One autocommit statement."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)
