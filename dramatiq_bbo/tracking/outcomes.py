"""Per-item outcomes an operation reports while it runs, written with its sub-batch.

``self.track_success()`` and ``self.track_failure(...)`` (on
:class:`~dramatiq_bbo.BaseOperation`) collect the outcomes of the current sub-batch here;
when the author's loop body is done with the sub-batch — before the engine writes its
checkpoint and commits — :func:`tracked_walk` writes them through the sub-batch's own
connection, inside its transaction. So they commit with the sub-batch and its checkpoint or
not at all: a sub-batch rolled back (an error, a lost lease, a killed worker) and retried
counts its items once. Writing them at the end, not at each call, keeps the tracked
operation's row locked only from there to the commit, however long the sub-batch takes.

The tracked operation is the one named by the operation's ``tracked_operation_id``
argument; None (tracking of its type was off at creation) reports nothing. The finaliser's
notification runs once the sub-batch that finished the tracked operation committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..db import DEFAULT_DATABASE
from ..errors import InvalidTrackingInput
from ..operation import wrap_walks
from . import inputs
from .counters import record
from .finalisation import after_finish
from .records import FailedItem

#: the operation argument naming the tracked operation outcomes go to
ARGUMENT = "tracked_operation_id"


class SubBatchOutcomes:
    """The outcomes reported during one sub-batch, not written yet."""

    def __init__(self, tracked_id: int | None) -> None:
        self.tracked_id = tracked_id
        self.successful = 0
        self.failures: list[FailedItem] = []

    def success(self, n: int = 1) -> None:
        self.successful += inputs.count("n", n)

    def failure(self, **item: Any) -> None:
        try:
            self.failures.append(inputs.failed_item(**item))
        except TypeError as exc:  # a missing or unknown keyword
            raise InvalidTrackingInput(f"track_failure(): {exc}") from None

    def write(self, connection: Any) -> bool:
        """Write them in the sub-batch's transaction; True if they finished the operation."""
        if self.tracked_id is None:
            return False
        return record(connection, self.tracked_id, self.successful, self.failures)


def tracked_id(operation: Any) -> int | None:
    """The tracked operation ``operation`` reports to (its ``tracked_operation_id``)."""
    arguments = operation.arguments
    if not isinstance(arguments, dict) or ARGUMENT not in arguments:
        raise InvalidTrackingInput(
            f"{type(operation).__name__} reports outcomes but was enqueued without the "
            f"{ARGUMENT!r} argument (the id tracking.create_operation() returned, or None)"
        )
    value = arguments[ARGUMENT]
    return None if value is None else inputs.tracked_id(value)


def tracked_walk(operation: Any, walk: Iterator[Any]) -> Iterator[Any]:
    """``walk`` (the engine's sub-batches), writing each one's outcomes at its end and
    running the finaliser once the sub-batch that finished the tracked operation committed
    (the engine commits a sub-batch before it yields the next one, or ends)."""
    record_ = getattr(operation, "operation", None)
    database = getattr(record_, "database_name", None) or DEFAULT_DATABASE
    finished: list[int] = []
    try:
        for sub_batch in walk:
            _notify(finished, database)  # the previous sub-batch committed
            outcomes = operation._outcomes = SubBatchOutcomes(None)
            yield sub_batch
            operation._outcomes = None
            if outcomes.successful or outcomes.failures:
                outcomes.tracked_id = target = tracked_id(operation)
                if target is not None and outcomes.write(sub_batch.connection):
                    finished.append(target)
        _notify(finished, database)
    finally:
        operation._outcomes = None


def _notify(finished: list[int], database: str) -> None:
    while finished:
        after_finish(finished.pop(), database=database)


wrap_walks(tracked_walk)
