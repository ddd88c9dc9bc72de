"""Handing an operation to its next orchestrator message: lease the operation, then send.

Every stage that calls an orchestrator (a wake after enqueue, the scheduler's pass, the
runner's chain, a hold's call-back, the unknown-class give-back) does the same two things in
one transaction: write a fresh stage lease on the operation row, covering the message's delay
plus ``lease_seconds``, then write the orchestrator message (see ``messages``). They differ only
in the condition on the lease they replace, which is :class:`Take`.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

import psycopg

from ..db import REGISTRY
from ..queries import query
from ..state.scopes import tables_for
from .messages import ORCHESTRATOR, new_token
from .runtime import messenger


class Take(enum.Enum):
    """Which stage lease the new one may replace."""

    #: any (the caller holds the operation row and has decided)
    ANY = "pipeline_lease_operation"
    #: only an expired or absent one, on a runnable operation (a wake: never steal a stage)
    FREE = "pipeline_take_free_lease"
    #: the one the caller's message held, or an expired/absent one (passing it on)
    PASSED = "pipeline_pass_stage_lease"


class Leasable(Protocol):
    """What a lease needs to know of an operation: its row (an OperationRecord has it)."""

    @property
    def id(self) -> Any: ...
    @property
    def partition(self) -> int: ...


def take_lease(
    conn: psycopg.Connection[Any],
    operation: Leasable,
    *,
    delay: float = 0.0,
    take: Take = Take.ANY,
    held: str | None = None,
) -> str | None:
    """Write a fresh stage lease on ``operation`` lasting ``delay`` + ``lease_seconds``; its
    token, or None when ``take``'s condition turned it away."""
    operations, _ = tables_for(operation.id)  # the id says the scope
    token = new_token()
    params = {
        "token": token,
        "seconds": delay + float(REGISTRY.settings.lease_seconds),
        "partition": operation.partition,
        "id": operation.id,
    }
    if take is Take.PASSED:
        params["held"] = held
    cursor = conn.execute(query(take.value, operations=operations), params)
    if take is not Take.ANY and cursor.fetchone() is None:
        return None
    return token


def send_orchestrator(
    conn: psycopg.Connection[Any],
    database: str,
    operation_id: Any,
    token: str,
    delay: float = 0.0,
    *,
    wake: bool = False,
) -> None:
    """The orchestrator message owning ``token``, due in ``delay`` seconds; ``wake``: a
    wake-up's, which yields a free slot to the operations already waiting (:mod:`.refill`)."""
    delay_ms = int(delay * 1000) or None
    args: tuple[Any, ...] = (database, str(operation_id), token) + ((True,) if wake else ())
    messenger().send(conn, database, ORCHESTRATOR, *args, delay_ms=delay_ms)


def lease_and_send(
    conn: psycopg.Connection[Any],
    database: str,
    operation: Leasable,
    *,
    delay: float = 0.0,
    take: Take = Take.ANY,
    wake: bool = False,
) -> bool:
    """:func:`take_lease` then :func:`send_orchestrator` in ``conn``'s transaction; False when
    the lease was turned away (nothing is sent then)."""
    token = take_lease(conn, operation, delay=delay, take=take)
    if token is None:
        return False
    send_orchestrator(conn, database, operation.id, token, delay, wake=wake)
    return True
