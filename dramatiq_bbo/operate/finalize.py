"""``finalize()``: run the rest of an operation now, in the calling process, with progress.

An operator (or a deploy script) that needs an operation done before the next step does not
want to wait for the pipeline's pace: ``finalize`` runs it to its end in this thread, exactly
as :func:`~dramatiq_bbo.jobs.inline.run_to_completion` does (same jobs, checkpoints and retry
rules, without the pipeline's gates and interval). It is safe while workers run the same
operation: a job a worker holds is waited for, never run twice, and the workers' next stage
messages find the operation taken over and do nothing.

``on_progress(record)`` is called with the operation's fresh record when it starts, at most
every :data:`PROGRESS_SECONDS` between sub-batches, and at the end, so a command line can
draw a bar; an exception it raises is logged and ignored (a broken display must not fail a
job), while ``KeyboardInterrupt`` stops the run at once (the job is given back at its last
checkpoint, the pipeline carries the operation on).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidSteering, InvalidTransition, OperationNotFound
from ..jobs.control import transition
from ..jobs.ending import CLASS_DISABLED, run_state_stop_reason
from ..jobs.inline import run_to_completion
from ..logs import OPERATION_FINALIZED, event, logger, operation_fields
from ..migrations import requires_schema
from ..operation import resolve
from ..operators import operator
from ..state.records import OperationRecord, OperationStatus
from ..state.store import fetch_operation, parse_operation_id

#: the shortest time between two ``on_progress`` calls while the operation runs (seconds)
PROGRESS_SECONDS = 0.5

Progress = Callable[[OperationRecord], Any]


@requires_schema
def finalize(
    operation_id: Any,
    *,
    on_progress: Progress | None = None,
    by: str | None = None,
    database: str | None = None,
) -> OperationRecord:
    """Run the operation to its end now (a paused one is resumed first); its record then —
    still unfinished if it was paused, cancelled or its class disabled meanwhile.
    InvalidTransition when it has ended already or its class is disabled."""
    if on_progress is not None and not callable(on_progress):
        raise InvalidSteering(f"on_progress must be callable or None, got {on_progress!r}")
    who = operator(by)
    key = parse_operation_id(operation_id)
    name = database or DEFAULT_DATABASE
    before = _runnable(name, key)
    if before.status == OperationStatus.PAUSED:
        before = transition("resume", key, database=name, by=who)
    reporter = _Reporter(name, key, on_progress)
    reporter.report(before)
    started, after = time.monotonic(), before
    try:
        after = run_to_completion(key, stop_check=reporter.check, database=name)
        reporter.report(after)
    finally:
        event(
            OPERATION_FINALIZED,
            **operation_fields(after),
            by=who,
            previous_state=before.status.name.lower(),
            new_state=after.status.name.lower(),
            completed=after.status == OperationStatus.FINISHED,
            seconds=round(time.monotonic() - started, 3),
        )
    return after


def _runnable(name: str, key: Any) -> OperationRecord:
    """The operation, if finalize may run it here (unfinished, its class not disabled and
    importable in this process), before anything is written."""
    with REGISTRY.connection(name) as conn:
        record = fetch_operation(conn, key)
    if record is None:
        raise OperationNotFound(f"no operation {str(key)!r} in database {name!r}")
    if not record.unfinished:
        raise InvalidTransition(
            f"cannot finalize operation {key}: it is {record.status.name.lower()} "
            "(finalize applies to queued, active and paused operations)"
        )
    if run_state_stop_reason(name, record) == CLASS_DISABLED:
        raise InvalidTransition(
            f"cannot finalize operation {key}: its class {record.job_class_name!r} is "
            "disabled (enable it first)"
        )
    resolve(record.job_class_name)  # UnknownOperationClass: this process cannot run it
    return record


class _Reporter:
    """Calls ``on_progress`` with fresh records, throttled; never stops the run itself."""

    def __init__(self, name: str, key: Any, on_progress: Progress | None) -> None:
        self.name = name
        self.key = key
        self.on_progress = on_progress
        self.last = float("-inf")

    def check(self) -> str | None:
        """A stop check that only reports: between sub-batches, at most every
        PROGRESS_SECONDS, the operation's record goes to ``on_progress``."""
        if self.on_progress is None or time.monotonic() - self.last < PROGRESS_SECONDS:
            return None
        with REGISTRY.connection(self.name) as conn:
            record = fetch_operation(conn, self.key)
        if record is not None:
            self.report(record)
        return None

    def report(self, record: OperationRecord) -> None:
        if self.on_progress is None:
            return
        self.last = time.monotonic()
        try:
            self.on_progress(record)
        except Exception:  # a broken display must not fail the job
            logger.exception("on_progress failed for operation %s", self.key)
