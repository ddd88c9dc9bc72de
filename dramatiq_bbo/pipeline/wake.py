"""Waking one operation at once (after enqueue, after resume) instead of at the next tick —
in the dispatch order: a woken operation takes a free slot only when no operation is already
waiting for one (:mod:`.refill`); otherwise it joins the pool, where the next freed slot finds
it in order.

``start_in_transaction``: in enqueue's own transaction, when the operation's database holds
the broker's queue, the enqueue itself takes the capacity lock, hands the free slots to the
operations waiting, and — a slot left — starts the operation as an orchestrator would
(:func:`~.orchestrator.decide`: the same checks), writing the runner message with the
operation row: one hop from enqueue to work. The middleware's ``before_job`` is asked by that
runner, in the worker (whose middleware governs jobs), before the job runs. In the
caller's transaction (``connection=``) the capacity lock would be held until the caller
commits, blocking every job's end meanwhile, so there the orchestrator's first message is
written instead, flagged as a wake-up: the orchestrator applies the same order when it runs.

``wake`` (after commit, resume, a hold's end) takes the operation's stage lease if no stage
holds it and writes that wake-up message. Without ``setup(broker)`` in this process neither
does anything: the scheduler's periodic pass picks the operation up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from ..db import REGISTRY
from ..logs import logger
from ..state.records import OperationRecord
from .handoff import Take, lease_and_send
from .runtime import messenger

#: :func:`~.orchestrator.decide`, registered by the orchestrator module when it is imported
#: (``setup`` imports it): this module sits below it — enqueue, resume and the operator's
#: commands import it — and must not import the whole job machinery itself
_decide: Callable[..., Any] | None = None


def register(decide: Callable[..., Any]) -> None:
    """Called by :mod:`.orchestrator` on import: how an enqueue starts its operation."""
    global _decide
    _decide = decide


def start_in_transaction(
    conn: psycopg.Connection[Any], operation: OperationRecord, *, own: bool
) -> Any:
    """Enqueue hook, in its transaction (``own``: enqueue's own, else the caller's): start the
    operation at once if first in line (the job and its runner message), or send the wake-up
    message; what was started (an :class:`~.orchestrator.Started`: call its ``after_commit`` once
    committed), or None."""
    database = operation.database_name
    if not messenger().ready or database not in messenger().outbox_databases:
        return None
    if not own or _decide is None:
        lease_and_send(conn, database, operation, take=Take.FREE, wake=True)
        return None
    return _decide(conn, database, operation.id, None, wake=True, gate=True)


def wake(operation: OperationRecord) -> bool:
    """True when an orchestrator (wake-up) message was sent for ``operation``."""
    if not messenger().ready or not operation.unfinished:
        return False
    try:
        with REGISTRY.connection(operation.database_name) as conn, conn.transaction():
            return lease_and_send(
                conn, operation.database_name, operation, take=Take.FREE, wake=True
            )
    except Exception:  # a failed wake only costs latency: the tick re-drives the operation
        logger.exception("waking operation %s failed", operation.id)
        return False
