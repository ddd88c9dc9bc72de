"""Operations a test kills mid-job: importable by name from a subprocess.

``KillableVisit`` (written with ``perform()``, the author's loop) and ``KillableVisitProcess``
(the same with ``process()``, the framework's loop) add one visit to each row of every
sub-batch. In a process whose environment sets ``BBO_TEST_KILL_AFTER=n``, the n-th sub-batch
dies with ``os._exit(9)`` — no cleanup, no rollback sent, like ``kill -9`` — after its update
ran but before its checkpoint committed: the dead process leaves an uncommitted sub-batch and a
job ``running`` under a lease. (An environment variable, not an argument, so the process that
resumes the operation does not die too.)
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq_bbo as bbo

KILL_AFTER = "BBO_TEST_KILL_AFTER"


def visit(operation: Any, sub_batch: bbo.SubBatch) -> None:
    """One sub-batch of either style: the update, then maybe the kill."""
    sub_batch.update(visits=operation.table.visits + 1)
    cls = type(operation)
    cls.sub_batches_seen += 1  # in this process
    if cls.sub_batches_seen == int(os.environ.get(KILL_AFTER, "0")):
        os._exit(9)


class KillableVisit(bbo.BaseOperation):
    name = "acceptance.killable_visit"
    pause_ms = 0

    sub_batches_seen = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            visit(self, sub_batch)


class KillableVisitProcess(bbo.BaseOperation):
    name = "acceptance.killable_visit_process"
    pause_ms = 0

    sub_batches_seen = 0

    def process(self, sub_batch: bbo.SubBatch) -> None:
        visit(self, sub_batch)


#: the operation class of each way of writing one
STYLES: dict[str, type[bbo.BaseOperation]] = {
    "perform": KillableVisit,
    "process": KillableVisitProcess,
}
