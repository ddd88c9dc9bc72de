"""Lost connections: recognising them, healing the peewee connection, and retrying with backoff.

Postgres restarts, failovers and ``pg_terminate_backend`` break connections under a running
process. None of that is a bug in the work being done, so the library treats it as an
interruption, never as a failed attempt, and never keeps using a dead connection:

- :func:`is_connection_error` is the one place that decides what a lost connection looks
  like (a broken socket, the server shutting down or not accepting connections yet, the
  libpq connection-exception class ``08``). A statement or lock timeout is *not* one: the
  connection is fine, the work was too slow (:mod:`dramatiq_bbo.walk.timeouts`).
- :func:`heal` discards the thread's peewee connection once it is broken, so the next use
  opens a new one (peewee would otherwise hand the dead one out forever). Pooled psycopg
  connections are checked by the pool at every checkout (:mod:`dramatiq_bbo.db`).
- :func:`retrying` re-runs an idempotent step (the end-of-job bookkeeping, the chain to the
  next stage, a stage message) on a connection error, after 0.1 s, 0.2 s, ... up to
  ``reconnect_backoff_max_seconds`` between tries, for ``reconnect_seconds`` in all. So an
  operation resumes as soon as Postgres is back; if it stays away longer, the error
  propagates and the scheduler's lease recovery takes over.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg

from .errors import ConnectionFailed, error_chain
from .logs import CONNECTION_GAVE_UP, CONNECTION_RETRY, event
from .logs import CONNECTION_LOST as CONNECTION_LOST_EVENT

T = TypeVar("T")

#: SQLSTATEs that end the session: admin shutdown (pg_terminate_backend, fast and immediate
#: shutdown), crash shutdown, "the database system is starting up / shutting down", idle
#: session and idle-in-transaction timeouts. Class 08 (connection exception) is all of them.
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})

#: the interrupted_reason of a job stopped by a lost connection
CONNECTION_LOST = "connection_lost"


def is_connection_error(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what it wraps: peewee re-raises psycopg errors as its own, with
    the original in ``orig``) says the connection to Postgres was lost or could not be made."""
    return any(
        isinstance(error, ConnectionFailed) or _is_psycopg_connection_error(error)
        for error in error_chain(exc)
    )


def _is_psycopg_connection_error(error: BaseException) -> bool:
    if not isinstance(error, psycopg.Error) or isinstance(error, psycopg.errors.PipelineAborted):
        return False
    sqlstate = error.sqlstate
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES
    # No SQLSTATE: raised by libpq or psycopg itself ("the connection is lost", "server closed
    # the connection unexpectedly", "the connection is closed", connect failures).
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


def is_broken(conn: Any) -> bool:
    """A psycopg connection that can no longer be used (closed, or its socket lost)."""
    return bool(getattr(conn, "closed", False) or getattr(conn, "broken", False))


def heal(database: Any) -> bool:
    """Discard this thread's peewee connection of ``database`` if it is broken, with any
    transaction peewee still believes open on it; the next use connects afresh. True when
    one was discarded. Cheap enough to call before every sub-batch (two attribute reads)."""
    state = getattr(database, "_state", None)
    conn = getattr(state, "conn", None)
    if state is None or conn is None or not is_broken(conn):
        return False
    with contextlib.suppress(Exception):
        database._close(conn)  # a pooled peewee database takes it back and drops it
    state.reset()
    return True


def backoff(settings: Any) -> Iterator[float]:
    """Delays between tries: doubling from ``reconnect_backoff_seconds`` up to
    ``reconnect_backoff_max_seconds``, until ``reconnect_seconds`` have passed."""
    deadline = time.monotonic() + float(settings.reconnect_seconds)
    delay = max(float(settings.reconnect_backoff_seconds), 0.001)  # never a busy loop
    cap = max(float(settings.reconnect_backoff_max_seconds), delay)
    while (left := deadline - time.monotonic()) > 0:
        yield min(delay, cap, left)
        delay = min(delay * 2, cap)


def retrying(doing: str, step: Callable[[], T], *, settings: Any) -> T:
    """``step()``, tried again after a connection error with :func:`backoff` (see the module
    docstring); any other error, or the last connection error once ``reconnect_seconds``
    have passed, propagates. ``step`` must be safe to run again after a failed try.
    ``settings`` (the registry's) gives the reconnect timings."""
    delays = backoff(settings)
    tries = 0
    while True:
        try:
            return step()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            tries += 1
            delay = next(delays, None)
            if delay is None:
                event(
                    CONNECTION_GAVE_UP,
                    level=logging.ERROR,
                    doing=doing,
                    tries=tries,
                    error=_describe(exc),
                )
                raise
            event(
                CONNECTION_RETRY,
                level=logging.WARNING,
                doing=doing,
                tries=tries,
                delay_seconds=round(delay, 3),
                error=_describe(exc),
            )
            time.sleep(delay)


def connection_lost(job: Any, engine: Any, exc: BaseException, give_back: Callable[[], T]) -> T:
    """A job run cut short by a lost connection: an interruption, not a failed attempt.

    Logged once, marked ``connection_lost`` on the run (the job's ``metrics``), and
    ``give_back()`` puts the job back to pending with its attempt refunded (the end-of-job
    bookkeeping, which retries until Postgres answers). The next run resumes from the
    checkpoint in the job row, so a sub-batch whose ``COMMIT`` was lost with the connection
    is neither applied twice nor skipped."""
    event(
        CONNECTION_LOST_EVENT,
        level=logging.WARNING,
        job_id=str(job.id),
        operation_id=str(job.worker_id),
        error=_describe(exc),
    )
    if engine is not None:
        engine.interrupted_reason = CONNECTION_LOST
    return give_back()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
