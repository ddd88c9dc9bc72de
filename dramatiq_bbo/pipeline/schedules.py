"""Cron operations: "enqueue this operation on this table on this cron schedule".

::

    bbo.schedule(PurgeUnconfirmedEmails, "emails", "id", cron="0 * * * *")
    bbo.setup(broker)   # before or after: either order works

``schedule()`` checks everything that can be checked without a database at once — the class
(:class:`~dramatiq_bbo.errors.UnknownOperationClass`), the cron expression
(:class:`~dramatiq_bbo.errors.InvalidCronExpression`, normalised so periodiq 0.14 fires on
Sundays, see :mod:`dramatiq_bbo.pipeline.cron`), the column, the arguments and the sizes —
and records the declaration. ``setup(broker)`` then declares one periodiq actor per schedule
on the application's broker, on the pipeline's queue; a schedule declared after ``setup()`` is
declared on that broker at once. Declare schedules at import time of the module both the
periodiq process and the workers import (the periodiq process lists the broker's periodic
actors when it starts). Cron operations are cell-local (system work, no organization).

When the actor runs it enqueues the operation like ``bbo.enqueue(...)`` would, and the
pipeline wakes it at once. Two periodiq processes firing the same minute yield one
operation: the second enqueue returns the first operation (``duplicate=True``) while it is
unfinished — enqueue's duplicate detection — and also, for ``dedupe_seconds`` (default 30 s,
periodiq's own ``skip_delay``: it drops a message older than that) after its creation, once
it finished: an hourly purge with nothing to do finishes in milliseconds, and a second firing
of the same minute must not start it again. Both checks run under enqueue's advisory lock on
the configuration, so racing firings serialise. (Two firings of one slot are processed within
``skip_delay`` of their common ``scheduled_at``; two slots of a cron expression are at least
60 s apart, so the window never swallows the next slot's run.)

The actors do not retry (``max_retries=0``): a firing that fails (database down) is logged
by dramatiq and the next slot runs as usual.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import periodiq
import psycopg
from psycopg.rows import dict_row

from ..db import REGISTRY
from ..enqueueing.api import EnqueueResult, after_commit, announce, enqueue_request, lock_key
from ..enqueueing.checks import (
    SIZES,
    EnqueueRequest,
    _arguments_json,
    _checked_size,
    _cursor_columns,
    check_priority,
    check_request,
)
from ..enqueueing.table_policy import check_name_allowed
from ..errors import InvalidBatchSizes, InvalidScope, OperationDefinitionError, TableNotFound
from ..logs import DUPLICATE_ENQUEUE, event, logger
from ..operation import BaseOperation, resolve
from ..queries import query
from ..state.records import OperationRecord
from ..state.store import CELL_LOCAL_TABLES
from ..walk.catalog import TableInfo, resolve_table
from .cron import normalize_cron

__all__ = ["CronOperation", "declare_cron_operations", "schedule", "scheduled", "unschedule"]

#: how long after a cron operation was created a second firing returns it (seconds)
DEDUPE_SECONDS = 30.0
#: the enqueue options a schedule may set (sizes and priority; no scope, no connection)
ENQUEUE_OPTIONS = frozenset((*SIZES, "priority"))
_ORGANIZATION_OPTIONS = frozenset(("organization_id", "user_id", "user"))
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.:]")
_ACTOR_NAME = re.compile(r"[A-Za-z0-9_.:]{1,255}")
#: longest accepted dedupe window: a day (two slots of one schedule are at least 60 s apart)
MAX_DEDUPE_SECONDS = 86_400.0


@dataclass(frozen=True)
class CronOperation:
    """One declared schedule. ``expression`` is the normalised cron expression periodiq
    runs; ``actor_name`` names its periodic actor."""

    operation_class: type[BaseOperation]
    table_name: str
    column_name: str
    cron: str
    expression: str
    arguments: Any
    database: str | None
    options: Mapping[str, Any]
    actor_name: str
    dedupe_seconds: float = DEDUPE_SECONDS
    _arguments_json: str = field(default="{}", repr=False)

    def _key(self) -> tuple[Any, ...]:
        return (
            self.operation_class.name,
            self.table_name,
            self.column_name,
            self.expression,
            self._arguments_json,
            self.database,
            sorted(self.options.items()),
            self.dedupe_seconds,
        )

    def fire(self) -> EnqueueResult:
        """Enqueue the operation now (what the periodic actor does); see the module
        docstring for what a second firing of the same slot returns."""
        request = check_request(
            self.operation_class,
            self.table_name,
            self.column_name,
            arguments=self.arguments,
            organization_id=None,
            user_id=None,
            user=None,
            database=self.database,
            sizes={name: self.options.get(name) for name in SIZES},
            priority=self.options.get("priority"),
        )
        recent: OperationRecord | None = None
        with REGISTRY.connection(request.database) as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                table = resolve_table(conn, request.table_name)
                # enqueue's own lock on this configuration (re-entrant in this transaction):
                # held until commit, so a racing firing sees this one's operation
                conn.execute(
                    query("operation_lock_configuration"), {"key": lock_key(request, table)}
                )
                if self.dedupe_seconds > 0:
                    recent = self._recent_operation(conn, request, table)
                if recent is None:
                    result = enqueue_request(conn, request)
        if recent is not None:
            self._report_duplicate(recent)
            return EnqueueResult(recent, duplicate=True)
        # its operation still running is what a firing often finds: not worth a warning
        announce(result, duplicate_level=logging.DEBUG)
        if not result.duplicate:  # committed now: wake the pipeline, as enqueue() does
            after_commit(result.operation)
        return result

    def _recent_operation(
        self, conn: psycopg.Connection[Any], request: EnqueueRequest, table: TableInfo
    ) -> OperationRecord | None:
        """This schedule's operation created less than ``dedupe_seconds`` ago, if any."""
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                query("cron_recent_operation", operations=CELL_LOCAL_TABLES[0]),
                {
                    "job_class_name": request.operation_class.name,
                    "table_schema": table.schema,
                    "table_name": table.name,
                    "column_name": request.column_name,
                    "database_name": request.database,
                    "job_arguments": request.arguments_json,
                    "seconds": float(self.dedupe_seconds),
                },
            ).fetchone()
        return None if row is None else OperationRecord.from_row(row)

    def _report_duplicate(self, recent: OperationRecord) -> None:
        event(
            DUPLICATE_ENQUEUE,
            level=logging.DEBUG,
            operation_id=str(recent.id),
            job_class_name=recent.job_class_name,
            table_schema=recent.table_schema,
            table_name=recent.table_name,
            column_name=recent.column_name,
            database_name=recent.database_name,
            status=recent.status.name.lower(),
            cron_actor=self.actor_name,
            reason="created by this schedule less than dedupe_seconds ago",
        )


_schedules: dict[str, CronOperation] = {}
_lock = threading.RLock()
#: (broker, queue name) given by setup(): later schedules are declared there at once
_target: tuple[dramatiq.Broker, str] | None = None


def schedule(
    operation_class: type[BaseOperation] | str,
    table_name: str,
    column_name: str,
    *,
    cron: str,
    arguments: Any = None,
    database: str | None = None,
    name: str | None = None,
    dedupe_seconds: float = DEDUPE_SECONDS,
    **enqueue_options: Any,
) -> CronOperation:
    """Enqueue ``operation_class`` on ``table_name``/``column_name`` on the ``cron`` schedule.

    ``enqueue_options`` are enqueue's sizes and ``priority``. ``name`` overrides the actor
    name (default ``bbo_cron:<class name>:<table>:<column>``; needed to schedule one class on
    one column twice, e.g. with other arguments). Declaring the very same schedule again is
    a no-op that returns it. Raises a :class:`~dramatiq_bbo.errors.ValidationError` subclass
    at once for anything wrong that needs no database (the table is checked when it fires).
    """
    cls = resolve(operation_class)
    expression = normalize_cron(cron)
    if not isinstance(table_name, str) or not table_name.strip():
        raise TableNotFound(f"table_name must be a non-empty string, got {table_name!r}")
    check_name_allowed(cls, table_name)  # the name's form, refused schemas, cls.tables
    _cursor_columns(cls, column_name)
    arguments_json = _arguments_json(arguments, REGISTRY.settings)
    options = _checked_options(enqueue_options)
    if database is not None and REGISTRY.names():
        REGISTRY.get(database)  # UnknownDatabase now when already configured
    _check_dedupe_seconds(dedupe_seconds)
    actor_name = _actor_name(name, cls, table_name, column_name)
    declared = CronOperation(
        operation_class=cls,
        table_name=table_name,
        column_name=column_name,
        cron=cron,
        expression=expression,
        arguments=json.loads(arguments_json),
        database=database,
        options=options,
        actor_name=actor_name,
        dedupe_seconds=float(dedupe_seconds),
        _arguments_json=arguments_json,
    )
    return _register(declared)


def _check_dedupe_seconds(dedupe_seconds: Any) -> None:
    if (
        isinstance(dedupe_seconds, bool)
        or not isinstance(dedupe_seconds, int | float)
        or not math.isfinite(dedupe_seconds)
        or not 0 <= dedupe_seconds <= MAX_DEDUPE_SECONDS
    ):
        raise InvalidBatchSizes(
            f"dedupe_seconds must be a number in 0..{MAX_DEDUPE_SECONDS:g}, got {dedupe_seconds!r}"
        )


def _actor_name(
    name: str | None, cls: type[BaseOperation], table_name: str, column_name: str
) -> str:
    """``name`` checked as a dramatiq actor name, or the default one of this schedule."""
    if name is not None and (not isinstance(name, str) or not _ACTOR_NAME.fullmatch(name)):
        raise OperationDefinitionError(
            f"name must be 1..255 letters, digits, '_', '.', ':' (a dramatiq actor name), "
            f"got {name!r}"
        )
    return name or _UNSAFE_NAME.sub("_", f"bbo_cron:{cls.name}:{table_name}:{column_name}")


def _register(declared: CronOperation) -> CronOperation:
    """Record a declaration (the same one again is a no-op); declare it on the broker at once
    when ``setup()`` already ran."""
    actor_name = declared.actor_name
    with _lock:
        existing = _schedules.get(actor_name)
        if existing is not None:
            if existing._key() == declared._key():
                return existing
            raise OperationDefinitionError(
                f"a different cron operation is already declared as {actor_name!r} "
                f"({existing.operation_class.name} on {existing.table_name}.{existing.column_name}"
                f" at {existing.cron!r}); pass name= to declare another one"
            )
        _schedules[actor_name] = declared
        if _target is not None:
            _declare(declared, *_target)
    return declared


def scheduled() -> list[CronOperation]:
    """The declared cron operations, by actor name."""
    with _lock:
        return [_schedules[name] for name in sorted(_schedules)]


def unschedule(actor_name: str) -> None:
    """Forget a declaration (tests). An actor already declared on a broker stays there."""
    with _lock:
        _schedules.pop(actor_name, None)


def declare_cron_operations(
    broker: dramatiq.Broker, queue_name: str
) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare every scheduled cron operation as a periodiq actor on ``broker`` (called by
    ``setup()``, after periodiq's middleware was added); later schedules follow at once."""
    global _target
    with _lock:
        _target = (broker, queue_name)
        return {
            name: _declare(declared, broker, queue_name) for name, declared in _schedules.items()
        }


def _declare(
    declared: CronOperation, broker: dramatiq.Broker, queue_name: str
) -> dramatiq.Actor[Any, Any]:
    if declared.actor_name in broker.actors:  # setup() called again
        return broker.get_actor(declared.actor_name)  # type: ignore[no-any-return]

    def fire() -> None:
        result = declared.fire()
        logger.log(
            logging.DEBUG if result.duplicate else logging.INFO,
            "cron operation %s: %s operation %s",
            declared.actor_name,
            "found the" if result.duplicate else "enqueued",
            result.operation.id,
        )

    fire.__name__ = fire.__qualname__ = declared.actor_name
    options: dict[str, Any] = {"periodic": periodiq.cron(declared.expression)}
    if "max_retries" in broker.actor_options:  # a broker without the Retries middleware
        options["max_retries"] = 0
    return dramatiq.actor(
        fire, broker=broker, actor_name=declared.actor_name, queue_name=queue_name, **options
    )


def _checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    scoped = sorted(_ORGANIZATION_OPTIONS & set(options))
    if scoped:
        raise InvalidScope(
            f"cron operations are cell-local: {', '.join(scoped)} cannot be given to schedule()"
        )
    unknown = sorted(set(options) - ENQUEUE_OPTIONS)
    if unknown:
        raise TypeError(
            f"schedule() got unexpected keyword arguments {unknown}; "
            f"enqueue options allowed: {', '.join(sorted(ENQUEUE_OPTIONS))}"
        )
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "priority":
            checked[key] = check_priority(value, "schedule(priority=...)")
        else:
            checked[key] = _checked_size(key, value, f"schedule({key}=...)")
    return checked
