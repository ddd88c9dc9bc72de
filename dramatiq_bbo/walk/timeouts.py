"""Postgres timeouts inside a sub-batch, as the one error the runners act on.

``statement_timeout`` and ``lock_timeout`` guard every sub-batch; whichever fires (through our
own statements, the author's peewee queries, which peewee re-raises as its own errors, or raw
SQL) becomes :class:`~dramatiq_bbo.errors.SubBatchTimeout`, which shrinks the job's sub-batch
and, on the last attempt, splits the job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from ..errors import SubBatchTimeout, error_chain


def timeout_kind(exc: BaseException) -> str | None:
    """``"statement_timeout"``/``"lock_timeout"`` if ``exc`` is (or wraps: peewee re-raises
    psycopg errors as its own) a Postgres timeout, else None."""
    for error in error_chain(exc):
        if isinstance(error, SubBatchTimeout):
            return error.kind
        if isinstance(error, psycopg.errors.LockNotAvailable):
            return "lock_timeout"
        if isinstance(error, psycopg.errors.QueryCanceled):
            return "statement_timeout"
    return None


@contextlib.contextmanager
def translate_timeouts(doing: str) -> Iterator[None]:
    """Re-raise a Postgres timeout as SubBatchTimeout, the error the pipeline acts on."""
    try:
        yield
    except SubBatchTimeout:
        raise
    except Exception as exc:
        kind = timeout_kind(exc)
        if kind is None:
            raise
        raise SubBatchTimeout(
            f"{kind} while {doing}; the sub-batch rolled back: {str(exc).strip()}", kind=kind
        ) from exc


def set_lock_timeout(conn: psycopg.Connection[Any], seconds: float) -> None:
    """``lock_timeout`` for the rest of ``conn``'s transaction (``SET LOCAL``), in whole
    milliseconds (at least 1: 0 would mean no timeout at all)."""
    milliseconds = max(1, round(float(seconds) * 1000))
    conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{milliseconds}ms"])
