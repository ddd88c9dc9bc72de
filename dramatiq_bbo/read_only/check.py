"""Whether an organization is read-only now, and the hold that pauses its operations.

The check is pluggable: ``configure(organization_read_only=fn)``, ``fn(database_name,
organization_id)`` answering False or None (writable), True (read-only) or a string (read-only,
the string being the reason). Without one, the table ``bbo.read_only_organizations`` (schema
0012) answers: a row flags its organization, its ``reason`` the reason. A check that raises or
answers anything else counts as read-only (the organization's data is protected rather than
written while nobody knows) and is logged as :data:`READ_ONLY_CHECK_FAILED`.

Who asks, and what follows, is the same whatever the check:

- the orchestrator, deciding an organization-scoped operation's next job (its row locked):
  read-only, it starts no job and holds the operation (:func:`hold_if_read_only`);
- a running job, between sub-batches, when it re-reads the operation's state (at most every
  ``STATUS_CHECK_SECONDS``, :mod:`dramatiq_bbo.jobs.ending`): read-only, the job stops at that
  checkpoint (:data:`READ_ONLY_STOP`) and the operation is held;
- ``run_to_completion``, before it starts: read-only, it runs nothing and returns.

The hold is the pause: ``on_hold_until`` = now + ``read_only_hold_seconds`` and ``hold_reason``
= ``read-only organization[: <reason>]``, which ``bbo.operations`` reports as ``paused_by
'read-only organization'`` and ``get_operation`` shows. The scheduler skips a held operation;
when the hold ends the orchestrator asks again, so the operation resumes by itself at most
``read_only_hold_seconds`` after the flag is lifted, or is held again. Cell-local operations are
never checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg

from ..db import REGISTRY
from ..errors import ReadOnlyCheckFailed
from ..logs import READ_ONLY_CHECK_FAILED, READ_ONLY_HOLD, event, logger, operation_fields
from ..queries import query
from ..state.records import OperationRecord
from ..state.scopes import tables_for
from ..walk.timeouts import set_lock_timeout

#: what ``bbo.operations`` says in ``paused_by``, and how the hold's reason begins
READ_ONLY_ORGANIZATION = "read-only organization"
#: the ``interrupted_reason`` of a job stopped because its organization became read-only
READ_ONLY_STOP = "read_only_organization"

#: a custom check, as ``configure(organization_read_only=...)`` takes it
ReadOnlyCheck = Callable[[str, int], "bool | str | None"]


def custom_check() -> ReadOnlyCheck | None:
    """The configured check, or None when the default table answers."""
    check: ReadOnlyCheck | None = REGISTRY.settings.organization_read_only
    return check


def read_only_reason(
    conn: psycopg.Connection[Any], database: str, organization_id: int
) -> str | None:
    """None when the organization is writable; else why it is read-only ('' for no reason
    given). ``conn``: a connection to ``database``, for the default table."""
    check = custom_check()
    if check is not None:
        return ask(check, database, organization_id)
    row = conn.execute(
        query("read_only_organization_reason"), {"organization_id": organization_id}
    ).fetchone()
    return None if row is None else str(row[0])


def ask(check: ReadOnlyCheck, database: str, organization_id: int) -> str | None:
    """A custom check's answer as a reason (None: writable); failing or nonsensical answers
    count as read-only, logged."""
    try:
        answer = check(database, organization_id)
    except Exception as exc:
        failure = ReadOnlyCheckFailed(
            f"the organization_read_only check raised {type(exc).__name__}: {exc}"
        )
        return _failed(failure, database, organization_id)
    if answer is None or answer is False:
        return None
    if answer is True:
        return ""
    if isinstance(answer, str):
        return answer
    failure = ReadOnlyCheckFailed(
        "the organization_read_only check must answer False/None (writable), True or a reason "
        f"string (read-only), got {type(answer).__name__} {answer!r:.100}"
    )
    return _failed(failure, database, organization_id)


def _failed(failure: ReadOnlyCheckFailed, database: str, organization_id: int) -> str:
    event(
        READ_ONLY_CHECK_FAILED,
        level=logging.ERROR,
        database_name=database,
        organization_id=organization_id,
        reason=str(failure),
    )
    return str(failure)


def hold_reason(reason: str) -> str:
    """``read-only organization``, with ``: <reason>`` when one was given."""
    return f"{READ_ONLY_ORGANIZATION}: {reason}" if reason else READ_ONLY_ORGANIZATION


def hold_if_read_only(conn: psycopg.Connection[Any], operation: OperationRecord) -> bool:
    """In the orchestrator's transaction (the operation row locked): True, and the operation
    held, when it is organization-scoped and its organization is read-only."""
    if operation.organization_id is None:
        return False
    reason = read_only_reason(conn, operation.database_name, operation.organization_id)
    if reason is None:
        return False
    hold(conn, operation, reason)
    return True


def hold(conn: psycopg.Connection[Any], operation: OperationRecord, reason: str) -> None:
    """Hold ``operation`` for ``read_only_hold_seconds`` with the read-only reason, in the
    caller's transaction; logged as :data:`READ_ONLY_HOLD`."""
    seconds = float(REGISTRY.settings.read_only_hold_seconds)
    # state.store's hold_operation, written here: this module sits below state.store (the
    # stop check of jobs.ending imports it), which keeps the import graph as shallow as it was
    operations, _ = tables_for(operation)
    row = conn.execute(
        query("operation_hold", operations=operations),
        {
            "seconds": seconds,
            "reason": hold_reason(reason),
            "partition": operation.partition,
            "id": operation.id,
        },
    ).fetchone()
    until = row[0] if row else None
    event(
        READ_ONLY_HOLD,
        **operation_fields(operation, "organization_id"),
        hold_seconds=seconds,
        reason=hold_reason(reason),
        on_hold_until=until.isoformat() if until else None,
    )


def hold_after_stop(conn: psycopg.Connection[Any], operation: OperationRecord, reason: str) -> None:
    """The hold written when a running job stops for a read-only organization, in a short
    transaction of its own on ``conn`` (like a health stop's: bounded by
    ``health_hold_lock_timeout_seconds``); a failure is logged, the job stops all the same,
    and the orchestrator that follows holds it."""
    try:
        with conn.transaction():
            set_lock_timeout(conn, REGISTRY.settings.health_hold_lock_timeout_seconds)
            hold(conn, operation, reason)
    except psycopg.Error:
        logger.exception("could not hold operation %s of a read-only organization", operation.id)
