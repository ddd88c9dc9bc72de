"""One bare dramatiq-pg message hop: the baseline of the latency figures.

The script sends a message to ``bench_hop`` through its own dramatiq-pg broker; a worker
thread runs the actor, which ``NOTIFY``s the message's token at once (autocommit, one
connection per worker thread kept open). Send → notification received is what any message
costs on this broker (commit of the send, the consumer's wake-up, a worker thread), measured
in the same run as enqueue → first sub-batch committed, which goes through more than one hop.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import psycopg

from benchmarks.common import QUEUE

CHANNEL = "bbo_bench_hop"
ACTOR_NAME = "bench_hop"
_local = threading.local()


def declare(broker: Any, dsn: str) -> Any:
    """The ``bench_hop`` actor on ``broker`` (the worker app and the script both declare it)."""

    def bench_hop(token: str) -> None:
        conn = getattr(_local, "conn", None)
        if conn is None or conn.closed:
            conn = _local.conn = psycopg.connect(dsn, autocommit=True)
        conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, token])

    return dramatiq.actor(
        bench_hop, actor_name=ACTOR_NAME, queue_name=QUEUE, broker=broker, max_retries=0
    )
