"""How one pipeline stage hands work to the next: messages that commit with the state change.

The choice: a **transactional outbox**. dramatiq-pg keeps its messages in
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

SCHEDULER = "bbo_scheduler"
ORCHESTRATOR = "bbo_orchestrator"
RUNNER = "bbo_runner"
TICK = "bbo_scheduler_tick"


#: what :func:`new_token` returns, as a Postgres regular expression: tells a stage message's
#: lease from the one ``run_to_completion`` holds (``run_to_completion:<hex>``)
STAGE_TOKEN_PATTERN = "^[0-9a-f]{32}$"


def new_token() -> str:
    """A lease token naming one stage message."""
    return uuid.uuid4().hex
