"""Holding an operation after a health stop, and letting it go once the signal is normal.

A hold is not a status: ``on_hold_until`` (now + the ``health_hold_seconds`` setting) and
``hold_reason`` (``"<indicator>: <reason>"``) on the operation row. The scheduler skips a held
operation and the orchestrator refuses it until the hold expires; the next orchestrator run
asks the indicators again, and clears the expired hold when they answer normal. Each hold is
logged (``HEALTH_HOLD``) and told to the middleware (``after_hold``, with the indicator: the
metrics count holds by indicator).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg

from ..db import REGISTRY
from ..logs import HEALTH_HOLD, event, logger, operation_fields
from ..pipeline.runtime import current
from ..queries import query
from ..state.records import OperationRecord
from ..state.store import hold_operation, tables_for
from ..walk.timeouts import set_lock_timeout
from .base import Result

#: the hold_reason CHECK constraint's limit (schema/sql/0001_operations.sql)
MAX_HOLD_REASON = 1000


def hold_reason(result: Result) -> str:
    text = f"{result.indicator}: {result.reason}" if result.reason else result.indicator
    return text if len(text) <= MAX_HOLD_REASON else text[: MAX_HOLD_REASON - 3] + "..."


def hold(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    result: Result,
    *,
    seconds: float | None = None,
) -> datetime | None:
    """Hold ``operation`` because of ``result``, on ``conn`` (inside the caller's transaction,
    as a savepoint, or in a transaction of its own). Returns the hold's end, or None when it
    could not be written (logged: the caller stops its work all the same)."""
    duration = float(REGISTRY.settings.health_hold_seconds if seconds is None else seconds)
    reason = hold_reason(result)
    try:
        with conn.transaction():
            set_lock_timeout(conn, REGISTRY.settings.health_hold_lock_timeout_seconds)
            until = hold_operation(conn, operation, seconds=duration, reason=reason)
    except psycopg.Error:
        logger.exception("could not hold operation %s (%s)", operation.id, reason)
        return None
    event(
        HEALTH_HOLD,
        level=logging.WARNING,
        indicator=result.indicator,
        signal=result.signal.value,
        reason=reason,
        **operation_fields(operation),
        on_hold_until=until.isoformat() if until else None,
        hold_seconds=duration,
    )
    current().after_hold(operation, reason=reason, indicator=result.indicator)
    return until


def release(conn: psycopg.Connection[Any], operation: OperationRecord) -> bool:
    """Clear an expired hold (the indicators answer normal again); True if one was."""
    if operation.on_hold_until is None:
        return False
    operations, _ = tables_for(operation)
    row = conn.execute(
        query("health_release_hold", operations=operations),
        {"partition": operation.partition, "id": operation.id},
    ).fetchone()
    if row is not None:
        event(
            HEALTH_HOLD,
            **operation_fields(operation),
            released=True,
            previous_reason=operation.hold_reason,
        )
    return row is not None
