"""A graceful worker shutdown hands its work over to a live worker within seconds.

What a stopping ``dramatiq`` worker process does (driven by the ``WorkerShutdown`` middleware):

1. ``before_worker_shutdown``: :data:`shutting_down` is set, so running jobs stop at their next
   sub-batch checkpoint and give the job back (pending, an interruption, no attempt); and this
   process's consumer threads are stopped at once. dramatiq would keep them consuming until
   every worker thread finished (its shutdown stops workers first, consumers after), so the
   stopping process would take — and strand — the very messages meant for live workers.
2. While stopping, the next stage's message of an operation whose job stopped here, and any
   stage message a worker thread still picks up (one already prefetched), is not acted on but
   kept (:func:`defer`): the operation's stage lease stays with that message, so nobody else
   starts the operation meanwhile. Once this process's consumers have stopped they are sent
   (:func:`flush`), with their NOTIFY, so only live workers can take them.
3. ``after_worker_shutdown``: whatever is still kept is sent; the advisory locks dramatiq-pg
   holds on this process's broker connections for the messages it had taken are released; and
   the messages dramatiq requeued (dramatiq-pg requeues without a NOTIFY, so no live consumer
   would look at them until it restarts) are announced again.

If the process dies before sending, the stage lease expires and a scheduler pass re-drives
the operation (within ``lease_seconds`` plus ``scheduler_pass_seconds``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from dramatiq.common import dq_name

from ..db import REGISTRY
from ..logs import logger
from ..queries import query
from .outbox import DRAMATIQ_SCHEMA
from .runtime import messenger

#: set while this worker process shuts down: running jobs stop at their next checkpoint
shutting_down = threading.Event()

_consumers_stopped = threading.Event()
_lock = threading.Lock()
#: (database, actor, args, due on the monotonic clock)
_kept: list[tuple[str, str, tuple[Any, ...], float]] = []


def begin(worker: Any) -> None:
    """Start a shutdown: jobs stop at their checkpoint, consumers stop taking messages."""
    shutting_down.set()
    _consumers_stopped.clear()
    consumers = list(getattr(worker, "consumers", {}).values())
    for consumer in consumers:
        with contextlib.suppress(Exception):
            consumer.stop()
    threading.Thread(
        target=_after_consumers_stop, args=(consumers,), name="bbo-handover", daemon=True
    ).start()


def _after_consumers_stop(consumers: list[Any]) -> None:
    deadline = time.monotonic() + float(REGISTRY.settings.shutdown_consumer_stop_seconds)
    for consumer in consumers:
        with contextlib.suppress(Exception):
            consumer.join(timeout=max(0.0, deadline - time.monotonic()))
    _consumers_stopped.set()
    flush()


def defer(database: str, actor: str, args: tuple[Any, ...], delay: float = 0.0) -> None:
    """Keep a stage message for a live worker: sent once this process stops consuming."""
    with _lock:
        _kept.append((database, actor, tuple(args), time.monotonic() + max(delay, 0.0)))
    if _consumers_stopped.is_set():
        flush()


def refuse(actor: str, args: tuple[Any, ...]) -> bool:
    """A stage message reached a stopping worker: keep it for a live one (True) instead of
    acting on it — claiming a job here would only give it back at once."""
    if not shutting_down.is_set():
        return False
    logger.info("worker shutting down: %s%r handed over to a live worker", actor, args)
    defer(str(args[0]), actor, args)
    return True


def flush() -> None:
    """Send every kept message now (each on its own connection, committed at once)."""
    with _lock:
        kept, _kept[:] = list(_kept), []
    now = time.monotonic()
    for database, actor, args, due in kept:
        delay_ms = int(max(0.0, due - now) * 1000) or None
        try:
            with REGISTRY.connection(database) as conn:
                messenger().send(conn, database, actor, *args, delay_ms=delay_ms)
        except Exception:  # the stage lease expires and a scheduler pass re-drives it
            logger.exception("handing %s%r over failed", actor, args)


def finish(broker: Any) -> None:
    """After the worker stopped: send what is kept, free and re-announce requeued messages."""
    _consumers_stopped.set()
    flush()
    try:
        _announce_requeued(broker)
    except Exception:
        logger.exception("re-announcing the messages requeued at shutdown failed")
    shutting_down.clear()
    _consumers_stopped.clear()


def _announce_requeued(broker: Any) -> None:
    """Release dramatiq-pg's message locks held by this process's idle broker connections
    (a requeued message stays locked by the connection that took it, which stays open in
    the pool until the process exits), then NOTIFY every message left queued on our queues,
    as an enqueue would."""
    pool = getattr(broker, "pool", None)
    idle = list(getattr(pool, "_pool", []) or [])
    if pool is None or not idle or messenger().broker is None:
        return
    for conn in idle:
        with contextlib.suppress(Exception):
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock_all()")
            conn.commit()
    queue = messenger().queue_name
    text = query("pipeline_reannounce_queued", queue=(DRAMATIQ_SCHEMA, "queue")).as_string(None)
    conn = idle[0]
    with conn.cursor() as cur:
        cur.execute(text, {"queues": [queue, dq_name(queue)]})
        row = cur.fetchone()
    conn.commit()
    if row and row[0]:
        logger.info("re-announced %s message(s) left queued at shutdown", row[0])
