"""The orchestrator's gate: the middleware's ``before_job``, and the hold a reason asks for.

A middleware that answers a reason (a string) holds the operation like a health stop does:
``on_hold_until`` = now + ``health_hold_seconds`` and ``hold_reason`` = the reason, written in
the orchestrator's transaction with the operation row locked, and logged as
:data:`MIDDLEWARE_HOLD`. The orchestrator then calls the operation back when the hold ends,
and asks again. ``True`` holds off without a hold of ours: the middleware recorded why.
When no middleware objects, an expired hold is cleared: its reason no longer holds.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..db import REGISTRY
from ..logs import MIDDLEWARE_HOLD, event, operation_fields
from ..queries import query
from ..state.records import OperationRecord
from ..state.store import hold_operation, tables_for
from .runtime import current


def held_by_middleware(conn: psycopg.Connection[Any], operation: OperationRecord) -> bool:
    """True (start no job now) when a middleware objects; a reason holds the operation."""
    answer = current().before_job(conn, operation)
    if isinstance(answer, str):
        hold_for_reason(conn, operation, answer)
    elif not answer and operation.on_hold_until is not None:  # expired: a live one is refused
        operations, _ = tables_for(operation)
        conn.execute(
            query("pipeline_release_expired_hold", operations=operations),
            {"partition": operation.partition, "id": operation.id},
        )
    return bool(answer)


def hold_for_reason(conn: psycopg.Connection[Any], operation: OperationRecord, reason: str) -> None:
    seconds = float(REGISTRY.settings.health_hold_seconds)
    hold_operation(conn, operation, seconds=seconds, reason=reason)
    event(
        MIDDLEWARE_HOLD,
        level=logging.WARNING,
        **operation_fields(operation),
        hold_seconds=seconds,
        reason=reason,
    )
    current().after_hold(operation, reason=reason, indicator=None)
