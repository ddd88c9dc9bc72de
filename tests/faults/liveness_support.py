"""Shared by the liveness fault tests: the test process as an application (``pipeline``), and
reading who runs a job and what is left in the broker's queue.

The worker processes are real ``dramatiq`` processes (:mod:`tests.acceptance.workers`); a job's
``lease_owner`` is ``host:pid:thread:nonce``, so the pid tells which process runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from dramatiq_pg import PostgresBroker
from psycopg.rows import dict_row

import dramatiq_bbo as bbo
from tests.acceptance.workers import DramatiqWorkers
from tests.helpers import CELL_LOCAL_JOBS, job_rows


@pytest.fixture
def pipeline(dsn: str) -> Iterator[Callable[..., None]]:
    """``pipeline(**settings)``: bbo configured in this process, and ``setup`` on a broker of
    this test's database (so ``enqueue`` wakes the operation at once)."""
    brokers: list[PostgresBroker] = []

    def start(**settings: Any) -> None:
        bbo.configure(dsn=dsn, **settings)
        broker = PostgresBroker(url=dsn, results=False)
        brokers.append(broker)
        bbo.setup(broker)

    yield start
    bbo.reset()


def job_row(conn: psycopg.Connection[Any], job_id: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT * FROM {CELL_LOCAL_JOBS} WHERE id = %s", [job_id]).fetchone()
    assert row is not None
    return row


def owner_pid(job: dict[str, Any]) -> int | None:
    """The pid of the process holding the job's lease (None when nobody does)."""
    owner = job.get("lease_owner")
    if not owner or job.get("status") != 1:
        return None
    parts = str(owner).split(":")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def running_in(conn: psycopg.Connection[Any], operation_id: Any) -> tuple[dict[str, Any], int]:
    """The operation's running job and the pid running it; AssertionError if none."""
    for job in job_rows(conn, operation_id):
        pid = owner_pid(job)
        if pid is not None:
            return job, pid
    raise AssertionError(f"no job of operation {operation_id} is running")


def group_of(pid: int, groups: list[DramatiqWorkers]) -> DramatiqWorkers:
    for group in groups:
        if pid in group.worker_pids():
            return group
    raise AssertionError(f"pid {pid} belongs to none of the worker groups")


def unfinished_messages(conn: psycopg.Connection[Any], states: tuple[str, ...]) -> list[Any]:
    """Messages of dramatiq.queue in ``states`` (e.g. stranded 'queued' ones)."""
    return conn.execute(
        "SELECT message->>'actor_name', state::text, queue_name FROM dramatiq.queue"
        " WHERE state::text = ANY(%s)",
        [list(states)],
    ).fetchall()
