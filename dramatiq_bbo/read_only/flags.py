"""Flagging an organization read-only, and lifting the flag: the default check's table.

``bbo.read_only_organizations`` (schema 0012) is what the pipeline reads when no
``organization_read_only`` check is configured (:mod:`.check`). These functions, and the
``dramatiq-bbo read-only add|remove|list`` command built on them, write it; with a custom check
configured, the application's own answer counts and this table is not read. A flag takes
effect at each running job's next sub-batch boundary and at the next decision for each waiting
operation; a lifted flag at the end of the current holds (``read_only_hold_seconds``).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidArgument
from ..logs import READ_ONLY_FLAG, event
from ..migrations import requires_schema
from ..queries import query
from ..settings import clean_text

#: the longest reason kept: the hold's reason (1000 characters) adds its prefix
MAX_REASON = 900
_BIGINT = range(-(2**63), 2**63)


@dataclass(frozen=True)
class ReadOnlyOrganization:
    """One row of ``bbo.read_only_organizations``."""

    organization_id: int
    reason: str | None
    since: datetime.datetime


@requires_schema
def mark_read_only(
    organization_id: int,
    *,
    reason: str | None = None,
    by: str | None = None,
    database: str = DEFAULT_DATABASE,
) -> ReadOnlyOrganization:
    """Flag ``organization_id`` read-only (an existing flag keeps its ``since`` and takes the
    new ``reason``); the flag as stored."""
    values = {"organization_id": _organization(organization_id), "reason": _reason(reason)}
    with REGISTRY.connection(database) as conn:
        row = conn.execute(query("read_only_mark"), values).fetchone()
    assert row is not None
    flag = ReadOnlyOrganization(*row)
    event(
        READ_ONLY_FLAG, organization_id=flag.organization_id, read_only=True, reason=reason, by=by
    )
    return flag


@requires_schema
def clear_read_only(
    organization_id: int, *, by: str | None = None, database: str = DEFAULT_DATABASE
) -> ReadOnlyOrganization | None:
    """Lift the flag of ``organization_id``; the flag removed, or None when there was none."""
    values = {"organization_id": _organization(organization_id)}
    with REGISTRY.connection(database) as conn:
        row = conn.execute(query("read_only_clear"), values).fetchone()
    if row is None:
        return None
    event(READ_ONLY_FLAG, organization_id=organization_id, read_only=False, by=by)
    return ReadOnlyOrganization(*row)


@requires_schema
def read_only_organizations(*, database: str = DEFAULT_DATABASE) -> list[ReadOnlyOrganization]:
    """Every flagged organization, the longest flagged first."""
    with REGISTRY.connection(database) as conn:
        rows = conn.execute(query("read_only_list")).fetchall()
    return [ReadOnlyOrganization(*row) for row in rows]


def _organization(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in _BIGINT:
        raise InvalidArgument(f"organization_id must be an int (bigint range), got {value!r}")
    return value


def _reason(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not clean_text(value) or len(value) > MAX_REASON:
        raise InvalidArgument(
            f"reason must be text of at most {MAX_REASON} characters without NUL, got "
            f"{value!r:.120}"
        )
    return value
