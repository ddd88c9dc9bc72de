"""How one pipeline stage hands work to the next: messages that commit with the state change.

The choice (DESIGN §4): a **transactional outbox**. dramatiq-pg keeps its messages in
Postgres, so when the operation's database is the broker's database the next stage's message
row (and its NOTIFY) is written in the same transaction as the state change that calls for it:
both commit or neither does, and a process killed between "state changed" and "message sent"
cannot exist. Every stage is also idempotent (leases, ``SKIP LOCKED``, claim conditions), and
the scheduler re-drives any operation left without a live stage, which covers the one case
the outbox cannot: an operation in another database than the broker's, whose message is sent
through the broker after commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..outbox import send_in_transaction

SCHEDULER = "bbo_scheduler"
ORCHESTRATOR = "bbo_orchestrator"
RUNNER = "bbo_runner"
TICK = "bbo_scheduler_tick"


@dataclass
class Messenger:
    """Sends stage messages; configured once by ``setup(broker, ...)``."""

    broker: Any = None
    queue_name: str = "background_operations"
    #: registry names of the databases that hold the broker's ``dramatiq.queue`` table
    outbox_databases: set[str] = field(default_factory=lambda: {"main"})

    @property
    def ready(self) -> bool:
        return self.broker is not None

    def send(
        self,
        conn: psycopg.Connection[Any],
        database: str,
        actor: str,
        *args: Any,
        delay_ms: int | None = None,
    ) -> str:
        """Send ``actor(*args)``: in ``conn``'s transaction when ``database`` holds the queue,
        else through the broker right away (the scheduler covers a crash in between)."""
        if not self.ready:
            return ""
        if database in self.outbox_databases:
            return send_in_transaction(
                conn, actor, self.queue_name, args=args, delay_ms=delay_ms or None
            )
        actor_obj = self.broker.get_actor(actor)
        message = actor_obj.send_with_options(args=args, delay=delay_ms or None)
        return str(message.message_id)


MESSENGER = Messenger()


def messenger() -> Messenger:
    """The messenger ``setup(broker, ...)`` configured in this process."""
    return MESSENGER


def new_token() -> str:
    """A lease token naming one stage message."""
    return uuid.uuid4().hex
