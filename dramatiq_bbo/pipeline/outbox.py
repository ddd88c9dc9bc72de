"""The transactional outbox: send a dramatiq message inside the caller's transaction.

dramatiq-pg keeps its messages in a Postgres table (``dramatiq.queue``) and wakes consumers
with ``NOTIFY``. Its ``broker.enqueue`` commits on a connection of its own pool, so "change
the state, then send the next stage's message" is two commits and a process killed between
them either strands the work or, resent later, runs it twice. Here the very same statement
(upsert the message row as ``queued`` and ``pg_notify`` its queue) runs on the caller's
psycopg 3 connection instead: the state change and the message commit together or not at
all, and Postgres delivers the NOTIFY only at commit, so no worker ever sees a message whose
state change was rolled back.

The row, the message encoding and the notification are exactly dramatiq-pg 0.12's, so its
consumers cannot tell the difference (tests/integration/test_outbox.py compares them with
``broker.enqueue``): the payload is the message JSON, or ``{"message_id": ...}`` when that
is 8,000 bytes or more (NOTIFY's limit), on channel ``dramatiq.<queue>.enqueue``; a delayed
message goes to the delay queue ``<queue>.DQ`` with ``options["eta"]``, which a worker
holds until the eta and then re-enqueues under the same id.

What does not happen: no broker exists here, so broker middleware ``before_enqueue`` /
``after_enqueue`` hooks do not run (dramatiq's own default middleware only act when a
message is processed, which is unaffected). On an autocommit connection outside
``conn.transaction()`` the message commits at once, exactly like ``broker.enqueue``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from dramatiq import Message
from dramatiq.common import current_millis, dq_name
from psycopg.types.json import Jsonb

from ..errors import InvalidArguments
from ..queries import query

__all__ = ["build_message", "enqueue_in_transaction", "send_in_transaction"]

#: dramatiq-pg's default schema for its ``queue`` table (``PostgresBroker(schema=...)``).
DRAMATIQ_SCHEMA = "dramatiq"


def send_in_transaction(
    conn: psycopg.Connection[Any],
    actor_name: str,
    queue_name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    delay_ms: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """Queue a message for ``actor_name`` on ``conn``'s current transaction; its id.

    The equivalent of ``actor.send_with_options(args=..., kwargs=..., delay=delay_ms,
    **options)`` on a dramatiq-pg broker, minus the separate commit.
    """
    message = build_message(
        actor_name, queue_name, args, kwargs, delay_ms=delay_ms, options=options
    )
    enqueue_in_transaction(conn, message)
    return message.message_id


def build_message(
    actor_name: str,
    queue_name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    delay_ms: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Message[Any]:
    """The message as dramatiq-pg's ``broker.enqueue(message, delay=delay_ms)`` stores it.

    A delay moves it to the delay queue with an absolute ``eta`` in milliseconds, taken now:
    the delay runs from the call, as with dramatiq-pg, not from the commit.
    """
    if delay_ms is not None and delay_ms < 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms!r}")
    message: Message[Any] = Message(
        queue_name=queue_name,
        actor_name=actor_name,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        options=dict(options or {}),
    )
    if delay_ms:
        message = message.copy(queue_name=dq_name(queue_name))
        message.options["eta"] = current_millis() + delay_ms
    return message


def enqueue_in_transaction(
    conn: psycopg.Connection[Any],
    message: Message[Any],
    *,
    schema: str = DRAMATIQ_SCHEMA,
    prefix: str = "",
) -> None:
    """Write ``message`` (from :func:`build_message`) and its NOTIFY on ``conn``.

    ``schema``/``prefix`` match ``PostgresBroker(schema=..., prefix=...)`` when the
    application changed them.
    """
    try:
        # dramatiq_pg.utils.tidy4json: encode with dramatiq's encoder, decode as plain JSON.
        payload = json.loads(message.encode())
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(
            f"message for actor {message.actor_name!r} cannot be encoded by dramatiq's "
            f"encoder: {exc}; send ids and plain JSON values only"
        ) from None
    conn.execute(
        query("outbox_enqueue_message", queue=(schema, f"{prefix}queue")),
        {
            "queue_name": message.queue_name,
            "message_id": message.message_id,
            "message": Jsonb(payload),
        },
    )
