"""``dramatiq-bbo demo`` end to end, as a person runs it: a subprocess of the real command.

On the embedded Postgres by default; with ``BBO_TEST_DSN`` set, on a fresh database of the
test server through ``--dsn``. The summary JSON says what happened; the test then checks that
nothing the demo started outlived it: no Postgres process on its data directory, the
directory itself gone, and (``--dsn``) its schema dropped, with the bbo and dramatiq schemas
it installed on the empty database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = 50_000
#: the whole demo on 50,000 rows, server start and cleanup included (it takes ~10 s)
DEADLINE_SECONDS = 60.0

pytestmark = pytest.mark.slow


def demo_command(dsn: str | None, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "dramatiq_bbo.cli.main", "demo", "--rows", str(ROWS)]
    if dsn is not None:
        command += ["--dsn", dsn]
    return [*command, *extra]


@pytest.fixture
def demo_dsn(request: pytest.FixtureRequest) -> str | None:
    """A fresh, empty database on the test server when BBO_TEST_DSN is set (the demo
    migrates it), else None: the demo's own embedded Postgres, and no test server started."""
    if os.environ.get("BBO_TEST_DSN"):
        factory: Callable[..., str] = request.getfixturevalue("database_factory")
        return factory(migrated=False)
    return None


def processes_on(directory: str) -> list[int]:
    """Live processes whose command line names ``directory`` (an embedded server's)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(directory in part for part in cmdline):
            found.append(process.info["pid"])
    return found


def assert_nothing_left(dsn: str | None, data_directory: str | None) -> None:
    if dsn is None:
        assert data_directory is not None
        assert not Path(data_directory).exists(), f"{data_directory} was not deleted"
        assert processes_on(data_directory) == [], "the embedded Postgres outlived the demo"
    else:
        # the database was empty: the demo installed bbo and dramatiq, so it drops them too
        with psycopg.connect(dsn, autocommit=True) as conn:
            left = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname IN ('bbo_demo', 'bbo', 'dramatiq')"
            ).fetchall()
        assert left == [], f"the demo left schemas {left}"


def test_demo_deletes_the_matching_rows_adapts_batches_holds_once_and_cleans_up(
    demo_dsn: str | None,
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        demo_command(demo_dsn, "--json"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS * 2,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    summary: dict[str, Any] = json.loads(result.stdout)

    assert summary["status"] == "finished"
    assert summary["rows"] == ROWS
    assert 0 < summary["matching"] < ROWS
    assert summary["deleted"] == summary["matching"]
    assert summary["kept"] == ROWS - summary["matching"]
    assert summary["matching_left"] == 0
    assert summary["processed"] == ROWS
    assert summary["ok"] is True
    assert summary["left"] == []

    assert summary["batch_size_changes"], "the optimizer never changed the batch size"
    assert summary["jobs"] >= 2

    assert summary["hold_note"] is None, summary["hold_note"]
    assert len(summary["holds"]) == 1, summary["holds"]
    hold = summary["holds"][0]
    assert hold["reason"].startswith("demo_stop: ")
    assert hold["ended"] is True
    assert hold["held_seconds"] >= 1.5  # health_hold_seconds is 2

    assert elapsed < DEADLINE_SECONDS, f"the demo took {elapsed:.1f} s"
    assert summary["elapsed_seconds"] < DEADLINE_SECONDS
    assert_nothing_left(demo_dsn, summary["data_directory"])


def test_demo_interrupted_by_ctrl_c_stops_everything(demo_dsn: str | None) -> None:
    process = subprocess.Popen(
        demo_command(demo_dsn, "--json", "--timeout", "120"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    data_directory = None
    lines = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if line.strip().startswith("in ") and "bbo-demo-" in line:
                data_directory = line.strip()[3:].split(" (")[0]
            if line.startswith("enqueued operation"):
                break
        else:
            pytest.fail("the demo ended before enqueueing:\n" + "".join(lines))
        time.sleep(0.5)  # workers are running a job
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    assert (demo_dsn is None) == (data_directory is not None)
    assert_nothing_left(demo_dsn, data_directory)
