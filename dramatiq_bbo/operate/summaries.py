"""Reading operations as an operator sees them: the rows of the ``bbo.operations``,
``bbo.jobs`` and ``bbo.failed_jobs`` views, as frozen snapshots.

The views (``schema/sql/0006_views.sql``) compute status as text, who paused an operation,
progress, rate and ETA once, in SQL, so psql, the command line, ChatOps and any later page
show the same numbers; this module only validates filters and reads them. Each snapshot has
one field per view column and an :meth:`as_dict` with stable keys and JSON-safe values (ids
and timestamps as strings, intervals as seconds), which the ``--json`` outputs print.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidArgument, OperationNotFound
from ..migrations import requires_schema
from ..queries import query
from ..state.records import OperationId, OperationStatus
from ..state.store import parse_operation_id, scope_of

#: the status texts of bbo.operations, in the order of the stored codes
STATUSES = tuple(status.name.lower() for status in OperationStatus)
#: the scope texts of bbo.operations
SCOPES = ("cell_local", "organization")
#: the most rows one call returns
MAX_LIMIT = 10_000

_BIGINT = range(-(2**63), 2**63)


def json_safe(value: Any) -> Any:
    """``value`` as JSON holds it without loss: timestamps as ISO 8601 text, intervals as
    seconds, decimals as floats, uuids as text; lists and dicts walked."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    return value


_R = TypeVar("_R", bound="_Row")


class _Row:
    """What the three snapshots share: building from a view row, and ``as_dict``."""

    @classmethod
    def from_row(cls: type[_R], row: dict[str, Any]) -> _R:
        return cls(**{f.name: row.get(f.name) for f in fields(cls)})  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        """Every field under its own name (the view's column), JSON-safe; ids as text, so
        that a bigint beyond 2**53 survives a JavaScript reader."""
        values = {f.name: json_safe(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]
        for key in ("id", "operation_id", "job_id"):
            if key in values and values[key] is not None:
                values[key] = str(values[key])
        return values


@dataclass(frozen=True)
class OperationSummary(_Row):
    """One row of ``bbo.operations``: an operation of either scope as an operator reads it.

    ``status`` is text (``queued``, ``active``, ``paused``, ``finished``, ``failed``,
    ``cancelled``); ``paused_by`` is ``manual``, ``disabled class``, ``read-only organization``,
    ``health`` or None;
    ``progress_percent`` is None while the size of the walk is unknown; ``eta`` is None
    unless the operation is active with a known rate (zero once finished)."""

    id: str
    scope: str
    database_name: str
    organization_id: int | None
    user_id: int | None
    job_class_name: str
    table_schema: str
    table_name: str
    column_name: str
    status: str
    paused_by: str | None
    hold_reason: str | None
    on_hold_until: datetime.datetime | None
    processed_tuple_count: int
    total_tuple_count: int | None
    progress_percent: decimal.Decimal | None
    rows_per_second: float | None
    eta: datetime.timedelta | None
    batch_size: int
    sub_batch_size: int
    interval_seconds: float
    jobs_succeeded: int
    jobs_failed: int
    jobs_running: int
    last_job_at: datetime.datetime | None
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    identifier: str
    priority: int
    pause_ms: int
    affected_tuple_count: int
    last_error_class: str | None
    last_error_message: str | None
    last_error_at: datetime.datetime | None
    updated_at: datetime.datetime

    @property
    def operation_id(self) -> OperationId:
        """The id as the steering functions take it (int or uuid)."""
        return parse_operation_id(self.id)


@dataclass(frozen=True)
class JobSummary(_Row):
    """One row of ``bbo.jobs``: a job (one keyset batch) with its duration and rows/s."""

    scope: str
    operation_id: str
    id: str
    database_name: str | None
    organization_id: int | None
    job_class_name: str | None
    status: str
    attempts: int
    interruptions: int
    batch_size: int
    sub_batch_size: int
    pause_ms: int
    min_cursor: list[Any]
    max_cursor: list[Any]
    checkpoint_cursor: list[Any] | None
    processed_tuple_count: int
    affected_tuple_count: int
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    duration: datetime.timedelta | None
    exception_class: str | None
    exception_message: str | None
    split: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime
    rows_per_second: float | None


@dataclass(frozen=True)
class FailedJob(_Row):
    """One row of ``bbo.failed_jobs``: a job whose last attempt failed, and why."""

    operation_id: str
    job_id: str
    scope: str
    database_name: str | None
    organization_id: int | None
    job_class_name: str | None
    attempts: int
    min_cursor: list[Any]
    max_cursor: list[Any]
    checkpoint_cursor: list[Any] | None
    exception_class: str | None
    exception_message: str | None
    failed_at: datetime.datetime | None


@requires_schema
def list_operations(
    *,
    status: str | OperationStatus | None = None,
    class_name: str | None = None,
    organization_id: int | str | None = None,
    scope: str | None = None,
    limit: int = 20,
    database: str | None = None,
) -> list[OperationSummary]:
    """Operations of both scopes, newest first; each filter narrows (None: no filter)."""
    params = {
        "status": _status(status),
        "class_name": _class_name(class_name),
        "organization_id": _organization_id(organization_id),
        "scope": _choice("scope", scope, SCOPES),
        "limit": _limit(limit),
    }
    rows = _read(database, "summaries_list_operations", params)
    return [OperationSummary.from_row(row) for row in rows]


@requires_schema
def get_summary(operation_id: Any, *, database: str | None = None) -> OperationSummary:
    """The operation ``operation_id`` as ``bbo.operations`` shows it (OperationNotFound)."""
    rows = _read(database, "summaries_operation", _key(operation_id))
    if not rows:
        raise OperationNotFound(
            f"no operation {str(parse_operation_id(operation_id))!r} in database "
            f"{database or DEFAULT_DATABASE!r}"
        )
    return OperationSummary.from_row(rows[0])


@requires_schema
def recent_jobs(
    operation_id: Any, *, limit: int = 10, database: str | None = None
) -> list[JobSummary]:
    """The operation's last ``limit`` jobs, newest first (OperationNotFound if it has none
    and does not exist)."""
    params = {**_key(operation_id), "limit": _limit(limit)}
    rows = _read(database, "summaries_recent_jobs", params)
    if not rows:
        get_summary(operation_id, database=database)  # raises when the operation is unknown
    return [JobSummary.from_row(row) for row in rows]


@requires_schema
def failed_jobs(
    *,
    since: datetime.timedelta | None = None,
    operation_id: Any = None,
    limit: int = 100,
    database: str | None = None,
) -> list[FailedJob]:
    """Jobs whose last attempt failed, most recent first: within the last ``since`` and of
    ``operation_id`` when given (OperationNotFound if it has none and does not exist)."""
    if since is not None and (
        not isinstance(since, datetime.timedelta) or since.total_seconds() <= 0
    ):
        raise InvalidArgument(
            f"since={since!r} is not a positive datetime.timedelta (for the last hour: "
            "datetime.timedelta(hours=1))"
        )
    key = _key(operation_id) if operation_id is not None else {"scope": None, "id": None}
    params = {**key, "since": since, "limit": _limit(limit)}
    rows = _read(database, "summaries_failed_jobs", params)
    if not rows and operation_id is not None:
        get_summary(operation_id, database=database)  # raises when the operation is unknown
    return [FailedJob.from_row(row) for row in rows]


# -- reading ---------------------------------------------------------------------------------


def _read(database: str | None, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with REGISTRY.connection(database or DEFAULT_DATABASE) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query(name), params).fetchall()


def _key(operation_id: Any) -> dict[str, Any]:
    """The view's (scope, id text) of an operation id (InvalidOperationId when malformed)."""
    key = parse_operation_id(operation_id)
    return {"scope": scope_of(key).name, "id": str(key)}


# -- validating filters ----------------------------------------------------------------------


def _status(value: str | OperationStatus | None) -> str | None:
    if isinstance(value, OperationStatus):
        return value.name.lower()
    return _choice("status", value, STATUSES)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in allowed:
        raise InvalidArgument(f"{name}={value!r} is not one of: {', '.join(allowed)}")
    return str(text)


def _class_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise InvalidArgument(
            f"class_name={value!r} is not an operation class name (a non-empty text of at "
            "most 255 characters)"
        )
    return value.strip()


def _organization_id(value: Any) -> int | None:
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        number = int(value.strip())
    if number is None or number not in _BIGINT:
        raise InvalidArgument(f"organization_id={value!r} is not an integer in the bigint range")
    return number


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidArgument(f"limit={value!r} is not an integer from 1 to {MAX_LIMIT}")
    return value
