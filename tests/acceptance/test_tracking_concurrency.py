"""Tracked operations under racing writers: 2 processes × 8 threads record 10,000 outcomes of
one tracked operation through the public API; the counters are exact and exactly one
finaliser runs (it sees every count and every failed item), then the entry is cleaned up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo import errors, tracking
from tests.acceptance.workers import ROOT

PROCESSES = 2
THREADS = 8
TOTAL = 10_000


def test_two_processes_of_eight_threads_count_exactly_and_finalise_once(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "CREATE TABLE finaliser_calls (successful bigint, failed bigint, items bigint,"
        " entity_ids jsonb)"
    )
    bbo.configure(dsn=dsn)
    try:
        tracked = tracking.create_operation("attribute_update", 1, TOTAL, {"mode": "ADD"})
        assert tracked is not None
        started = time.monotonic()
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.acceptance.tracking_writer",
                    dsn,
                    str(tracked),
                    str(process),
                    str(PROCESSES),
                    str(THREADS),
                    str(TOTAL),
                ],
                cwd=ROOT,
            )
            for process in range(PROCESSES)
        ]
        assert [writer.wait(timeout=120) for writer in writers] == [0] * PROCESSES
        elapsed = time.monotonic() - started

        calls = conn.execute("SELECT successful, failed, items, entity_ids FROM finaliser_calls")
        [(successful, failed, items, entity_ids)] = calls.fetchall()  # exactly one finaliser
        assert (successful, failed, items) == (9_000, 1_000, 1_000)
        assert entity_ids == list(range(0, TOTAL, 10))
        with_ids = json.dumps(entity_ids)
        assert with_ids  # every failed item, once each
        try:
            tracking.get_operation(tracked)
            raise AssertionError("the finished operation was not cleaned up")
        except errors.TrackedOperationNotFound:
            pass
        left = conn.execute(
            "SELECT (SELECT count(*) FROM bbo.tracked_operations),"
            " (SELECT count(*) FROM bbo.tracked_failed_items)"
        ).fetchone()
        assert left == (0, 0)
        print(f"\n{TOTAL} outcomes by {PROCESSES}x{THREADS} writers in {elapsed:.1f} s")
    finally:
        bbo.reset()
