"""Operation classes the pipeline acceptance tests enqueue and real ``dramatiq`` workers run.

Kept free of side effects (no configure, no broker) so that both the worker app
(:mod:`tests.acceptance.pipeline_app`, which imports it in every worker process) and the test
process (which only enqueues) can import it. Every class paces itself with ``pause_ms = 0``
and ``interval_seconds = 0``; a test overrides them through ``enqueue`` arguments.

Tables they expect (created by the tests, see :func:`make_counter_table`)::

    <table> (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)
    pipeline_runs (...)          -- RecordedVisit's log, see RUNS_TABLE_DDL
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
from psycopg import sql

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY

#: the reason the app's ``BBO_APP_STOP_INDICATOR`` health indicator gives for its stop
STOP_REASON = "maintenance window until 04:00"

#: RecordedVisit writes one row per run of a job (perform() call) here.
RUNS_TABLE_DDL = """
CREATE TABLE pipeline_runs (
    id bigserial PRIMARY KEY,
    operation_id text NOT NULL,
    job_id text NOT NULL,
    attempt int NOT NULL,
    min_cursor jsonb NOT NULL,
    max_cursor jsonb NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    pid int NOT NULL
)
"""


def make_counter_table(conn: psycopg.Connection[Any], table: str, rows: int) -> None:
    """``table`` with ids 1..rows, each ``visits = 0``."""
    name = sql.Identifier(table)
    conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)").format(
            name
        )
    )
    conn.execute(
        sql.SQL("INSERT INTO {} (id) SELECT g FROM generate_series(1, %s) AS g").format(name),
        [rows],
    )
    conn.execute(sql.SQL("ANALYZE {}").format(name))


class PipelineDelete(bbo.BaseOperation):
    """Deletes every row of its range."""

    name = "acceptance.pipeline.delete"
    operation_name = "delete_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.delete()


class PipelineVisit(bbo.BaseOperation):
    """``visits = visits + 1`` on every row; ``arguments["sleep_ms"]`` (default 0) sleeps in
    each sub-batch *after* its update, inside its transaction, so a test can kill a worker
    while a sub-batch is uncommitted. Written with ``perform()``: the author's loop."""

    name = "acceptance.pipeline.visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        sleep_ms = float((self.arguments or {}).get("sleep_ms", 0))
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            if sleep_ms > 0:
                time.sleep(sleep_ms / 1000)


class PipelineVisitProcess(bbo.BaseOperation):
    """:class:`PipelineVisit` written with ``process()``: the framework's loop."""

    name = "acceptance.pipeline.visit_process"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def process(self, sub_batch: bbo.SubBatch) -> None:
        sub_batch.update(visits=self.table.visits + 1)
        sleep_ms = float((self.arguments or {}).get("sleep_ms", 0))
        if sleep_ms > 0:
            time.sleep(sleep_ms / 1000)


#: the visiting operation class of each way of writing one
VISIT_STYLES: dict[str, type[bbo.BaseOperation]] = {
    "perform": PipelineVisit,
    "process": PipelineVisitProcess,
}


class RecordedVisit(bbo.BaseOperation):
    """Like :class:`PipelineVisit`, and logs each run of a job into ``pipeline_runs``: the
    operation, the job, its range, and the server's clock when perform() began and ended."""

    name = "acceptance.pipeline.recorded_visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        sleep_ms = float((self.arguments or {}).get("sleep_ms", 0))
        database = self.operation.database_name
        with REGISTRY.connection(database) as conn:
            row = conn.execute(
                "INSERT INTO pipeline_runs (operation_id, job_id, attempt, min_cursor, max_cursor,"
                " started_at, pid) VALUES (%s, %s, %s, %s, %s, clock_timestamp(), %s)"
                " RETURNING id",
                [
                    str(self.operation.id),
                    str(self.job.id),
                    self.job.attempts,
                    psycopg.types.json.Jsonb(self.job.min_cursor),
                    psycopg.types.json.Jsonb(self.job.max_cursor),
                    os.getpid(),
                ],
            ).fetchone()
        assert row is not None
        try:
            for sub_batch in self.each_sub_batch():
                sub_batch.update(visits=self.table.visits + 1)
                if sleep_ms > 0:
                    time.sleep(sleep_ms / 1000)
        finally:
            with REGISTRY.connection(database) as conn:
                conn.execute(
                    "UPDATE pipeline_runs SET ended_at = clock_timestamp() WHERE id = %s", [row[0]]
                )
