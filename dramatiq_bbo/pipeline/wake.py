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
from ..logs import logger
from ..state.records import OperationRecord
from .handoff import Take, lease_and_send
from .runtime import messenger


def wake_in_transaction(conn: psycopg.Connection[Any], operation: OperationRecord) -> None:
    """Enqueue hook: lease + orchestrator message in the enqueue's transaction."""
    if messenger().ready and operation.database_name in messenger().outbox_databases:
        lease_and_send(conn, operation.database_name, operation, take=Take.FREE)


def wake(operation: OperationRecord) -> bool:
    """True when an orchestrator message was sent for ``operation``."""
    if not messenger().ready or not operation.unfinished:
        return False
    try:
        with REGISTRY.connection(operation.database_name) as conn, conn.transaction():
            return lease_and_send(conn, operation.database_name, operation, take=Take.FREE)
    except Exception:  # a failed wake only costs latency: the tick re-drives the operation
        logger.exception("waking operation %s failed", operation.id)
        return False
