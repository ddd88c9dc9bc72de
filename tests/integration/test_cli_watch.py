"""``dramatiq-bbo watch`` in a pseudo-terminal, as an operator sees it: a live frame with one
progress bar per unfinished operation (percentage, rate, ETA), redrawn until Ctrl-C, which
ends it with exit 0."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from tests.integration.steering_support import Visit, make_counters

#: ANSI escapes (colours, cursor moves) rich writes to a terminal
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DEADLINE = 30.0


def half_done(dsn: str) -> tuple[str, str]:
    """An active operation over 300 counters that ran one job of three, then stopped; its id
    and its progress as the view computes it (``33.3%``)."""
    bbo.configure(dsn=dsn)
    try:
        operation = bbo.enqueue(Visit, "counters", "id", batch_size=100, sub_batch_size=50)
        operation_id = operation.operation.id

        def stop_after_one_job() -> str | None:
            done = [j for j in bbo.list_jobs(operation_id) if j.status == bbo.JobStatus.SUCCEEDED]
            return "test stop" if done else None

        record = bbo.run_to_completion(operation_id, stop_check=stop_after_one_job)
        assert record.status == bbo.OperationStatus.ACTIVE, record.status
        percent = bbo.list_operations(status="active")[0].progress_percent
        return str(operation_id), f"{float(percent):.1f}%"
    finally:
        bbo.reset()


def read_until(fd: int, wanted: re.Pattern[str], deadline: float) -> str:
    """What the terminal shows (escapes removed) once ``wanted`` appears in it."""
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            seen += ANSI.sub("", chunk.decode("utf-8", "replace"))
            if wanted.search(seen):
                return seen
    raise AssertionError(f"{wanted.pattern!r} never appeared; the terminal showed:\n{seen}")


def test_watch_draws_live_bars_in_a_terminal_until_ctrl_c(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    make_counters(conn, 300)
    operation_id, percent = half_done(dsn)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq_bbo.cli.main", "watch", "--every", "0.2", "--dsn", dsn],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    try:
        deadline = time.monotonic() + DEADLINE
        bar = r"━+\s*\S*"  # done part, and the rest in another colour (or blank)
        row = re.compile(
            rf"{operation_id}\s+{Visit.name}\s+counters\.id\s+{bar}\s+{re.escape(percent)}"
        )
        first = read_until(leader, row, deadline)
        assert "1 unfinished operation" in first and "Ctrl-C to stop" in first
        assert "active" in first
        # redrawn: the clock in the title moves on
        read_until(leader, re.compile(r"unfinished operation at .*\n(.|\n)*unfinished"), deadline)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)


def test_watch_off_a_terminal_prints_frames(dsn: str, conn: psycopg.Connection[Any]) -> None:
    make_counters(conn, 300)
    operation_id, percent = half_done(dsn)
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq_bbo.cli.main", "watch", "--every", "0.2", "--dsn", dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if sum("unfinished operation" in x for x in lines) >= 2:
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert any(line.split()[:1] == [operation_id] and percent in line for line in lines), lines
