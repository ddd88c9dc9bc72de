"""Waking one operation at once (after enqueue, after resume) instead of at the next tick.

The wake takes the operation's stage lease if no stage holds it and writes an orchestrator
message in the same transaction. Without ``setup(broker)`` in this process it does nothing:
the scheduler's periodic tick picks the operation up.

``wake_in_transaction`` does the same inside the enqueue's own transaction (even the
caller's, when enqueue joined one), when the operation's database holds the broker's queue:
the first message then commits with the operation row, and is delivered on that commit.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..db import REGISTRY
from ..observability.logs import logger
from ..queries import query
from ..records import OperationRecord
from ..store import tables_for
from .messages import ORCHESTRATOR, messenger, new_token


def wake_in_transaction(conn: psycopg.Connection[Any], operation: OperationRecord) -> None:
    """Lease + orchestrator message in the enqueue's transaction (enqueue calls it)."""
    if messenger().ready and operation.database_name in messenger().outbox_databases:
        _lease_and_send(conn, operation)


def wake(operation: OperationRecord) -> bool:
    """True when an orchestrator message was sent for ``operation``."""
    if not messenger().ready or not operation.unfinished:
        return False
    try:
        with REGISTRY.connection(operation.database_name) as conn, conn.transaction():
            return _lease_and_send(conn, operation)
    except Exception:  # a failed wake only costs latency: the tick re-drives the operation
        logger.exception("waking operation %s failed", operation.id)
        return False


def _lease_and_send(conn: psycopg.Connection[Any], operation: OperationRecord) -> bool:
    """Take the stage lease if no stage holds it, and write the orchestrator message."""
    operations, _ = tables_for(operation)
    token = new_token()
    row = conn.execute(
        query("pipeline_take_free_lease", operations=operations),
        {
            "token": token,
            "seconds": float(REGISTRY.settings.lease_seconds),
            "partition": operation.partition,
            "id": operation.id,
        },
    ).fetchone()
    if row is None:
        return False
    database = operation.database_name
    messenger().send(conn, database, ORCHESTRATOR, database, str(operation.id), token)
    return True
