"""The per-operation-type switch: tracking on (the default) or off, stored in the database.

While a type is off, :func:`~dramatiq_bbo.tracking.create_operation` creates nothing and
returns None, and operations given ``tracked_operation_id=None`` report nothing: the bulk
action itself runs as before. The check is part of the INSERT (``tracking_create``), so a
flag turned off is seen by the very next creation, in every process.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from ..db import DEFAULT_DATABASE, REGISTRY
from ..logs import event
from ..migrations import requires_schema
from ..queries import query
from . import events, inputs


@dataclass(frozen=True)
class Flag:
    operation_type: str
    enabled: bool
    changed_at: datetime.datetime
    changed_by: str | None


@requires_schema
def is_enabled(operation_type: str, *, database: str = DEFAULT_DATABASE) -> bool:
    """Whether tracking of ``operation_type`` is on (no flag set: on)."""
    values = {"operation_type": inputs.operation_type(operation_type)}
    with REGISTRY.connection(database) as conn:
        row = conn.execute(query("tracking_flag_get"), values).fetchone()
    return bool(row and row[0])


@requires_schema
def enable(operation_type: str, *, by: str | None = None, database: str = DEFAULT_DATABASE) -> None:
    """Turn tracking of ``operation_type`` on."""
    _set(operation_type, True, by, database)


@requires_schema
def disable(
    operation_type: str, *, by: str | None = None, database: str = DEFAULT_DATABASE
) -> None:
    """Turn tracking of ``operation_type`` off: creations return None from now on."""
    _set(operation_type, False, by, database)


@requires_schema
def list_flags(*, database: str = DEFAULT_DATABASE) -> list[Flag]:
    """Every operation type whose flag was set (the others are on)."""
    with REGISTRY.connection(database) as conn:
        rows = conn.execute(query("tracking_flags")).fetchall()
    return [Flag(*row) for row in rows]


def _set(operation_type: str, enabled: bool, by: str | None, database: str) -> None:
    checked = inputs.operation_type(operation_type)
    if by is not None:
        inputs.operation_type(by)  # the same limits: short clean text
    with REGISTRY.connection(database) as conn:
        conn.execute(
            query("tracking_flag_set"),
            {"operation_type": checked, "enabled": enabled, "changed_by": by},
        )
    event(
        events.FLAG_CHANGED,
        level=logging.INFO,
        operation_type=checked,
        enabled=enabled,
        by=by,
        database_name=database,
    )
