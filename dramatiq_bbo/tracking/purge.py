"""The purge: expired tracked operations and failed items deleted in bounded batches.

Readers stop seeing an entry the moment it expires (they filter on ``expires_at``); the
purge only reclaims the space. Each statement deletes at most ``tracking_purge_batch_size``
rows, in a transaction of its own (short locks, short WAL bursts), and one run makes at most
``tracking_purge_max_batches`` statements per table: a backlog is worked off over several
runs instead of in one long transaction. Failed items go first, so deleting an operation
never cascades into an unbounded delete. The run also re-notifies finished operations whose
finaliser died before notifying (:func:`~.finalisation.reclaim`).

``bbo.setup(broker)`` declares :func:`purge_all` as a periodiq actor (:data:`PURGE_CRON`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..db import DEFAULT_DATABASE, REGISTRY
from ..logs import event
from ..pipeline.cron import cron_spec
from ..pipeline.setup_checks import schema_checked
from ..queries import query
from ..reconnect import retrying
from . import events
from .finalisation import reclaim

#: the purge actor's name and when periodiq runs it
PURGE_ACTOR = "bbo_tracking_purge"
PURGE_CRON = "*/10 * * * *"


@dataclass(frozen=True)
class PurgeReport:
    failed_items: int
    operations: int
    statements: int
    renotified: int


def purge(database: str = DEFAULT_DATABASE) -> PurgeReport:
    """One purge run on ``database``: what it deleted, in how many statements."""
    settings = REGISTRY.settings
    limit = int(settings.tracking_purge_batch_size)
    batches = int(settings.tracking_purge_max_batches)
    items, item_statements = _batches("tracking_purge_failed_items", database, limit, batches)
    operations, statements = _batches("tracking_purge_operations", database, limit, batches)
    renotified = reclaim(database, limit=limit)
    report = PurgeReport(items, operations, item_statements + statements, renotified)
    if items or operations or renotified:
        event(
            events.PURGED,
            level=logging.INFO,
            database_name=database,
            failed_items=items,
            operations=operations,
            statements=report.statements,
            renotified=renotified,
        )
    return report


def purge_all() -> None:
    """The periodic actor: one purge per configured database, each failure logged."""
    for name in REGISTRY.names():
        try:
            retrying(
                f"tracking purge on {name}",
                functools.partial(purge, name),
                settings=REGISTRY.settings,
            )
        except Exception:
            logging.getLogger("dramatiq_bbo").exception("tracking purge on %s failed", name)


def _batches(name: str, database: str, limit: int, batches: int) -> tuple[int, int]:
    """Run the purge statement ``name`` until it deletes fewer than ``limit`` rows or
    ``batches`` statements ran: ``(rows deleted, statements)``."""
    deleted = statements = 0
    with REGISTRY.connection(database) as conn:
        while statements < batches:
            count = conn.execute(query(name), {"limit": limit}).rowcount
            statements += 1
            deleted += max(count, 0)
            if count < limit:
                break
    return deleted, statements


def declare_purge(declare: Callable[..., Any]) -> dict[str, Any]:
    """``{name: actor}`` of the purge, declared by ``bbo.setup(broker)``'s ``declare``."""
    actor = schema_checked(purge_all, every_database=True)
    return {PURGE_ACTOR: declare(actor, PURGE_ACTOR, periodic=cron_spec(PURGE_CRON))}
