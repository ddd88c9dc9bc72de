"""The operation of the tracking kill -9 test, imported by the test and by its workers.

Expects ``<table> (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)`` (make_counter_table).
"""

from __future__ import annotations

import dramatiq_bbo as bbo
from dramatiq_bbo import tracking  # noqa: F401  (installs track_success / track_failure)


class TrackedVisit(bbo.BaseOperation):
    """``visits = visits + 1`` on every row, each reported: ids divisible by 10 as failed
    items, the others as successes."""

    name = "faults.tracked_visit"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def process(self, sub_batch: bbo.SubBatch) -> None:
        for id in sub_batch.ids():
            if id % 10 == 0:
                self.track_failure(
                    entity_id=id,
                    entity_type="Project",
                    entity_name=f"project {id}",
                    entity_full_path=f"acme/p{id}",
                    error_message="Permission denied",
                    error_code="service_error",
                )
            else:
                self.track_success()
        sub_batch.update(visits=self.table.visits + 1)
