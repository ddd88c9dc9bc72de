"""An operation a test kills mid-job: importable by name from a subprocess.

``KillableVisit`` adds one visit to each row of every sub-batch. In a process whose
environment sets ``BBO_TEST_KILL_AFTER=n``, the n-th sub-batch dies with ``os._exit(9)`` — no
cleanup, no rollback sent, like ``kill -9`` — after its update ran but before its checkpoint
committed: the dead process leaves an uncommitted sub-batch and a job ``running`` under a
lease. (An environment variable, not an argument, so the process that resumes the operation
does not die too.)
"""

from __future__ import annotations

import os

import dramatiq_bbo as bbo

KILL_AFTER = "BBO_TEST_KILL_AFTER"


class KillableVisit(bbo.BaseOperation):
    name = "acceptance.killable_visit"
    pause_ms = 0

    sub_batches_seen = 0  # in this process

    def perform(self) -> None:
        kill_after = int(os.environ.get(KILL_AFTER, "0"))
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            type(self).sub_batches_seen += 1
            if type(self).sub_batches_seen == kill_after:
                os._exit(9)
