"""What an operator sees of operations run by a plain ``dramatiq`` worker: the metrics on
dramatiq's own Prometheus exposition, and log lines that say what happened.

The worker runs ``python -m dramatiq tests.acceptance.pipeline_app`` with dramatiq's
``Prometheus`` middleware on its broker; its exposition server gets a free port and a
multi-process directory of the test's own (``dramatiq_prom_port``, ``dramatiq_prom_db``),
so two runs never share port 9191 or its files.
"""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo.logs import HEALTH_SIGNAL
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.pipeline_operations import STOP_REASON, PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import wait_until

ROWS = 2_000
NINE_METRICS = (
    "background_operation_job_batch_size",
    "background_operation_job_sub_batch_size",
    "background_operation_job_interval_seconds",
    "background_operation_job_duration_seconds",
    "background_operation_job_updated_tuples_total",
    "background_operation_job_query_duration_seconds_bucket",
    "background_operation_worker_migrated_tuples_total",
    "background_operation_worker_total_tuple_count",
    "background_operation_worker_last_update_time_seconds",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exposition(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a worker whose broker has dramatiq's Prometheus middleware."""
    return {
        "BBO_APP_PROMETHEUS": "1",
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(port),
        "dramatiq_prom_db": str(tmp_path / "prometheus"),
        "dramatiq_prom_lock": str(tmp_path / "prometheus.lock"),
        **extra,
    }


def scrape(port: int) -> str:
    """The exposition's text, or "" while its server is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def series(text: str, name: str, operation: bbo.OperationRecord) -> list[str]:
    """The exposition lines of metric ``name`` labelled with ``operation``."""
    wanted = (
        f'migration_id="{operation.id}"',
        f'migration_identifier="{operation.identifier}"',
    )
    return [
        line
        for line in text.splitlines()
        if line.startswith(name + "{") and all(label in line for label in wanted)
    ]


def test_a_dramatiq_worker_exposes_the_nine_operation_metrics_next_to_dramatiqs_own(
    conn: psycopg.Connection[Any],
    web_process: None,
    dramatiq_workers: Callable[..., DramatiqWorkers],
    tmp_path: Path,
) -> None:
    make_counter_table(conn, "counters", ROWS)
    port = free_port()
    dramatiq_workers(processes=1, threads=2, extra_env=exposition(tmp_path, port))
    operation = bbo.enqueue(
        PipelineVisit, "counters", "id", batch_size=500, sub_batch_size=100
    ).operation
    finished = OperationStatus.FINISHED
    wait_until(lambda: bbo.get_operation(operation.id).status == finished, timeout=60)

    def finished_shown() -> str:
        text = scrape(port)
        shown = series(text, "background_operation_worker_migrated_tuples_total", operation)
        return text if shown and shown[0].endswith(f" {float(ROWS)}") else ""

    text = wait_until(finished_shown, timeout=30)
    missing = [name for name in NINE_METRICS if not series(text, name, operation)]
    assert missing == [], f"not on the exposition: {missing}\n{text}"
    (updated,) = series(text, "background_operation_job_updated_tuples_total", operation)
    assert updated.endswith(f" {float(ROWS)}")
    committed = series(text, "background_operation_sub_batches_total", operation)
    assert [line for line in committed if 'outcome="committed"' in line]
    assert re.search(r"^dramatiq_messages_total\{", text, re.MULTILINE), "dramatiq's own"


def test_a_health_stop_under_a_plain_dramatiq_worker_logs_the_indicator_and_its_reason(
    conn: psycopg.Connection[Any],
    web_process: None,
    dramatiq_workers: Callable[..., DramatiqWorkers],
    tmp_path: Path,
) -> None:
    make_counter_table(conn, "counters", 100)
    port = free_port()
    env = exposition(tmp_path, port, BBO_APP_STOP_INDICATOR="maintenance")
    workers = dramatiq_workers(processes=1, threads=2, extra_env=env)
    operation = bbo.enqueue(PipelineVisit, "counters", "id").operation

    def signal_line() -> str:
        lines = [line for line in workers.log_text().splitlines() if HEALTH_SIGNAL in line]
        return lines[0] if lines else ""

    line = wait_until(signal_line, timeout=30)
    # dramatiq's own format: "[time] [PID n] [Thread-n] [dramatiq_bbo] [WARNING] <message>"
    assert "[dramatiq_bbo] [WARNING]" in line
    assert "indicator=maintenance signal=stop" in line
    assert f'reason="{STOP_REASON}"' in line
    assert f"operation_id={operation.id}" in line
    # the signal is logged as the indicator answers; the hold commits with the orchestrator
    held = wait_until(lambda: bbo.get_operation(operation.id).hold_reason, timeout=30)
    assert held == f"maintenance: {STOP_REASON}"

    def holds() -> list[str]:
        text = scrape(port)
        found = series(text, "background_operation_health_holds_total", operation)
        return [line for line in found if 'indicator="maintenance"' in line]

    counted = float(wait_until(holds, timeout=30)[0].rsplit(" ", 1)[1])
    assert counted >= 1  # again each time a hold expires and the indicator still says stop
