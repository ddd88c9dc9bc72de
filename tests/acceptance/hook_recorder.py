"""A user middleware that records each hook call as a row, from whichever process calls it.

Rows go to ``hook_calls`` (the test creates it) on a pooled connection of their own,
committed at once: a ``before_job`` call is recorded even though it runs inside the
orchestrator's transaction. ``id`` orders the calls across processes.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY

HOOK_CALLS_DDL = (
    "CREATE TABLE hook_calls (id bigserial PRIMARY KEY, pid int NOT NULL, hook text NOT NULL,"
    " detail text)"
)


class HookRecorder(bbo.Middleware):
    def _record(self, hook: str, detail: str | None = None) -> None:
        with REGISTRY.connection() as conn:
            conn.execute(
                "INSERT INTO hook_calls (pid, hook, detail) VALUES (%s, %s, %s)",
                [os.getpid(), hook, detail],
            )

    def after_enqueue(self, operation: bbo.OperationRecord) -> None:
        self._record("after_enqueue", str(operation.id))

    def before_job(self, conn: Any, operation: bbo.OperationRecord) -> bool | str | None:
        self._record("before_job", str(operation.id))
        return None

    def between_sub_batches(self, operation: bbo.OperationRecord, job: Any) -> str | None:
        self._record("between_sub_batches", str(job.id))
        return None

    def after_job(self, operation: bbo.OperationRecord, outcome: Any) -> None:
        self._record("after_job", outcome.status.name.lower())

    def after_transition(self, operation: Any, previous: Any, new: Any) -> None:
        self._record("after_transition", f"{previous.name.lower()}->{new.name.lower()}")
