"""The sub-batch's transaction as peewee sees it: on its stack, and off it when it ends.

The walk begins and commits its transactions with its own statements (in the same round trips
as its checkpoint, :mod:`dramatiq_bbo.walk.round_trips`), but pushes each one on peewee's
transaction stack, so the author's peewee code inside a sub-batch sees a transaction
(``db.atomic()`` is a savepoint, ``after_commit`` callbacks run at its commit).
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from ..reconnect import heal, is_broken, is_connection_error


def end_transaction(
    database: Any, conn: psycopg.Connection[Any], transaction: Any, committed: bool
) -> None:
    """Take the sub-batch's transaction off peewee's stack; roll it back unless it
    committed, and run or drop peewee's ``after_commit`` callbacks accordingly.

    On a lost connection there is nothing to roll back (the server did): the connection
    is discarded so the next sub-batch, or the next job on this thread, opens a new one.
    Whether a ``COMMIT`` lost with the connection happened is not guessed: the checkpoint
    committed with the sub-batch or not at all, and the job resumes from the one stored
    in its row."""
    if database.top_transaction() is transaction:
        database.pop_transaction()
    if committed:
        database._run_commit_callbacks()
        return
    database._clear_commit_callbacks()
    if is_broken(conn):
        heal(database)
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            conn.rollback()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            heal(database)


def drop_connection(database: Any) -> None:
    """Forget and close this thread's connection (the next use opens a new one)."""
    conn = getattr(database._state, "conn", None)
    database._state.reset()
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
