"""Operation classes of the fault tests, imported by the test process and by the workers of
:mod:`tests.faults.fault_app` that are meant to know them.

Tables they expect::

    <table> (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)   -- make_counter_table
    fault_pace (sleep_ms int NOT NULL)                               -- PacedVisit only
"""

from __future__ import annotations

import time

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY

PACE_TABLE_DDL = (
    "CREATE TABLE fault_pace (sleep_ms int NOT NULL); INSERT INTO fault_pace VALUES (0)"
)


class PacedVisit(bbo.BaseOperation):
    """``visits = visits + 1`` on every row, then sleeps ``fault_pace.sleep_ms`` inside the
    sub-batch's transaction (read once per job), so a test can slow a run down while it
    kills workers and let it finish at full speed afterwards."""

    name = "faults.paced_visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        with REGISTRY.connection(self.operation.database_name) as conn:
            row = conn.execute("SELECT sleep_ms FROM fault_pace").fetchone()
        sleep_ms = int(row[0]) if row else 0
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            if sleep_ms > 0:
                time.sleep(sleep_ms / 1000)


class LateVisit(bbo.BaseOperation):
    """``visits = visits + 1`` on every row; imported only by some workers."""

    name = "faults.late_visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
