"""The health page's rows: each configured indicator and the last stop it put in the database.

The indicators' answers live in the workers that ask them (cached in each process, logged as
``background_operation_health_signal``); what every process can see is what a stop leaves
behind: a hold on the operation, its ``hold_reason`` starting with the indicator's name,
until ``on_hold_until``. So each indicator's row shows its last hold still recorded (the
operation it holds, why and until when), or that none is: the indicators let work go on.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from ..db import REGISTRY
from ..health import indicators, settings
from ..queries import query


@dataclass(frozen=True)
class IndicatorState:
    """One indicator as the page shows it: ``signal`` is ``stop`` while a hold it wrote is in
    force, ``expired`` when its last hold has passed but is not cleared yet, else ``normal``."""

    name: str
    signal: str
    reason: str | None = None
    until: datetime.datetime | None = None
    operation_id: str | None = None
    job_class_name: str | None = None


def indicator_states(database: str) -> list[IndicatorState]:
    """Every indicator configured in this process, in the order they are asked."""
    names = [i.name for i in indicators.configured(settings.current())]
    with REGISTRY.connection(database) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("web_health_holds"), {"indicators": names}).fetchall()
    holds = {row["indicator"]: row for row in rows}
    return [_state(name, holds.get(name)) for name in names]


def _state(name: str, hold: dict[str, Any] | None) -> IndicatorState:
    if hold is None:
        return IndicatorState(name, "normal")
    return IndicatorState(
        name,
        "stop" if hold["in_force"] else "expired",
        hold["hold_reason"],
        hold["on_hold_until"],
        hold["id"],
        hold["job_class_name"],
    )
