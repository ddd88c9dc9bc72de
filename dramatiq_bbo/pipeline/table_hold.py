"""An operation whose table is gone or replaced since enqueue: held with the reason, not retried.

Enqueue records the table's oid next to its (schema, name). When a stage finds that pair no
longer names that table (dropped, or renamed and another took its name), running on whatever
holds the name now would change the wrong rows, and retrying every minute would only fill the
logs. The orchestrator holds the operation instead, for ``health_hold_seconds``, with the
catalog's explanation as ``hold_reason`` (shown by ``bbo.get_operation``), and logs
:data:`TABLE_HOLD` once per process and operation. When the hold ends the next pass looks
again: a table renamed back resumes the operation; otherwise the operator cancels it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from ..db import REGISTRY
from ..logs import TABLE_HOLD, event, operation_fields
from ..state.records import OperationRecord
from ..state.store import hold_operation

_logged: set[str] = set()
_lock = threading.Lock()


def hold_for_table(
    conn: psycopg.Connection[Any], operation: OperationRecord, exc: BaseException
) -> None:
    """Hold ``operation`` on ``conn`` (whose transaction holds its row lock) with ``exc``'s
    text as the reason."""
    seconds = float(REGISTRY.settings.health_hold_seconds)
    reason = str(exc).strip() or type(exc).__name__
    hold_operation(conn, operation, seconds=seconds, reason=reason)
    with _lock:
        first = str(operation.id) not in _logged
        _logged.add(str(operation.id))
    if first:
        event(
            TABLE_HOLD,
            level=logging.WARNING,
            **operation_fields(operation),
            hold_seconds=seconds,
            reason=reason,
        )
