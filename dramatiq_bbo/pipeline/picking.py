"""Which schedulable operations get the free capacity next: the one order every dispatcher
uses (a scheduler pass, a job that ends and frees its slot, an enqueue's wake-up).

An operation is *due* from its ``next_run_at`` (schema 0009: the latest of its creation, the
end of its hold, the end of its stage lease, and one interval after its last job started) and
schedulable while due, queued or active, without a live job, its class not disabled. The order:

1. cell-local operations due for longer than :data:`AGEING_SHARE` of ``max_wait_seconds``
   (ageing: system work never waits more than ``max_wait_seconds`` behind user work, however
   much user work keeps arriving — served first from 90% of the bound on, so that the slots
   freeing in its last tenth reach them within it);
2. organization-scoped operations (users are waiting on them);
3. the other due cell-local operations.

Within each of the three: highest ``priority`` first, then the one due longest (earliest
``next_run_at``). Due longest is also the round robin among equal operations: one that just
ran is due again only one interval after its job started, behind those still waiting.
``exclude`` (the caller's own operation, say) is left out in SQL, before the limit.

Why nothing sorts the table (``pipeline_schedulable_operations``): the ``*_schedule`` index is
``(database_name, priority DESC, next_run_at) WHERE status IN (0, 1)``. Priority is a smallint
with few distinct values (usually one), so the query first walks the distinct priorities with a
loose index scan (a recursive CTE: one index probe per priority, highest first), then for each
reads the index range ``next_run_at`` in the window, in order, stopping after ``limit`` plus
:data:`LOCKED_SLACK` candidates that pass the per-row checks (live job, disabled class, excluded
id). The outer query locks the first ``limit`` of those candidates (``FOR UPDATE SKIP LOCKED``)
and re-checks them as they are once locked. The work is a few index probes per priority plus
the candidates read, whether 10 or 100,000 operations are due, and "almost none due" stops at
the first index entry past ``now()``.

Planning the statement costs several times running it (four references to a partitioned
table, 1-2 ms against 0.2-0.5), and Postgres's own choice between custom and generic plans
flips with the tables' sizes, so it is prepared on each connection at once and its generic
plan forced (``plan_cache_mode``, for these statements only: set back before returning). The
generic plan is the index-served one because nothing in its estimates hangs on a parameter:
the candidates' count is a literal (a LIMIT parameter is guessed at a tenth of the rows,
which makes the plan look dear enough for Postgres to JIT-compile it, tens of ms, where JIT is
on), and the per-row checks are hashed subplans, read once per statement.

The caller holds the capacity advisory lock
(:func:`dramatiq_bbo.pipeline.scheduler.scheduler_lock_key`) and counts the free slots;
:func:`pick_schedulable` only chooses, locking the chosen rows in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from ..db import REGISTRY
from ..queries import query
from ..state.scopes import parse_operation_id
from ..state.store import CELL_LOCAL_TABLES, ORGANIZATION_TABLES

#: scopes in the order they are served when no operation waited past ``max_wait_seconds``,
#: with their (operations, jobs) tables
SCOPES = (("organization", ORGANIZATION_TABLES), ("cell_local", CELL_LOCAL_TABLES))

#: candidates read past ``limit``: so many rows of the top locked by other transactions right
#: now (an orchestrator, a checkpoint, a stuck session) do not shrink the pick
LOCKED_SLACK = 16


class Picked(NamedTuple):
    """A schedulable operation's row, as it was picked (locked in the caller's transaction)."""

    id: Any
    partition: int


class _Window(NamedTuple):
    """One step of the order: a scope's operations due for ``at_least`` seconds or more (and
    for less than ``less_than``, when set)."""

    tables: tuple[Any, Any]
    at_least: float
    less_than: float | None


#: the share of ``max_wait_seconds`` after which a due cell-local operation goes first
AGEING_SHARE = 0.9


def dispatch_windows(max_wait_seconds: float) -> tuple[_Window, ...]:
    """The three steps of the order (module docstring), in the order they are served."""
    aged = max_wait_seconds * AGEING_SHARE
    return (
        _Window(CELL_LOCAL_TABLES, aged, None),
        _Window(ORGANIZATION_TABLES, 0.0, None),
        _Window(CELL_LOCAL_TABLES, 0.0, aged),
    )


def pick_schedulable(
    conn: psycopg.Connection[Any],
    database: str,
    limit: int,
    *,
    exclude: Any = None,
    max_wait_seconds: float | None = None,
) -> list[Picked]:
    """Up to ``limit`` schedulable operations of ``database``, in dispatch order, their rows
    locked; ``exclude``: an operation id (or several) never picked, such as the caller's own;
    ``max_wait_seconds``: the setting of that name unless given."""
    wait = float(
        REGISTRY.settings.max_wait_seconds if max_wait_seconds is None else max_wait_seconds
    )
    excluded = _excluded(exclude)
    picked: list[Picked] = []
    conn.execute(query("pipeline_generic_plans"))
    for window in dispatch_windows(wait):
        if len(picked) >= limit:
            break
        operations, jobs = window.tables
        wanted = limit - len(picked)
        statement = query(
            "pipeline_schedulable_operations",
            operations=operations,
            jobs=jobs,
            candidates=sql.Literal(wanted + LOCKED_SLACK),  # an int of ours: see above
        )
        rows = conn.execute(
            statement,
            {
                "database_name": database,
                "due_for_at_least": window.at_least,
                "due_for_less_than": window.less_than,
                "exclude": excluded,
                "limit": wanted,
            },
            prepare=True,  # planning costs several times the run: see the module docstring
        ).fetchall()
        picked.extend(Picked(row[0], row[1]) for row in rows)
    conn.execute(query("pipeline_plans_as_before"))  # an error above ends the transaction
    return picked


def _excluded(exclude: Any) -> list[str]:
    """The excluded ids as the text Postgres gives ``id::text`` (a uuid string in any case or
    a UUID, an int or its string: one spelling each)."""
    if exclude is None:
        return []
    many = exclude if isinstance(exclude, Iterable) and not isinstance(exclude, str) else [exclude]
    return [str(parse_operation_id(item)) for item in many]
