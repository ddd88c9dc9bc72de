"""Waking one operation at once (after enqueue, after resume) instead of at the next tick.

The wake takes the operation's stage lease if no stage holds it and writes an orchestrator
message in the same transaction. Without ``setup(broker)`` in this process it does nothing:
the scheduler's periodic tick picks the operation up.
"""

from __future__ import annotations

from ..db import REGISTRY
from ..observability.logs import logger
from ..queries import query
from ..records import OperationRecord
from ..store import tables_for
from .messages import MESSENGER, ORCHESTRATOR, new_token


def wake(operation: OperationRecord) -> bool:
    """True when an orchestrator message was sent for ``operation``."""
    if not MESSENGER.ready or not operation.unfinished:
        return False
    operations, _ = tables_for(operation)
    token = new_token()
    database = operation.database_name
    try:
        with REGISTRY.connection(database) as conn, conn.transaction():
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
            MESSENGER.send(conn, database, ORCHESTRATOR, database, str(operation.id), token)
    except Exception:  # a failed wake only costs latency: the tick re-drives the operation
        logger.exception("waking operation %s failed", operation.id)
        return False
    return True
