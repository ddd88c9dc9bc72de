"""How a command's result reads: the columns of each table, JSON, and markdown.

The JSON form is the data itself (:meth:`as_json_value` of each result: the ``as_dict()`` of
the summaries, whose keys are the views' column names). The table and markdown forms show a
chosen subset of columns, each cell formatted for a person (``42.0%``, ``1h 05m``,
``2026-11-30 01:36:10``, times in UTC): both come from :func:`table`, so the command line's
table and a chat reply show the same columns. Nothing here draws: the command line hands the
cells to rich.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping
from typing import Any

from .results import Detail, Done, Listing, Result

Item = Mapping[str, Any]
Column = tuple[str, Callable[[Item], str]]


def text(value: Any) -> str:
    """A value as a person reads it: ``-`` for nothing, thousands separated, times in UTC
    to the second (whatever the server's TimeZone)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, str):
        moment = _timestamp(value)
        if moment is not None:
            return f"{moment:%Y-%m-%d %H:%M:%S}"
    return str(value)


def duration(value: Any) -> str:
    """Seconds (or an interval's text) as ``45s``, ``12m 05s``, ``3h 20m``, ``2d 04h``."""
    if value is None:
        return "-"
    if not isinstance(value, int | float):
        return str(value)
    seconds = int(round(value))
    if seconds < 60:
        return f"{max(value, 0):.0f}s" if value >= 1 or value == 0 else f"{value:.2f}s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s"


def percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}%"


def _timestamp(value: str) -> datetime.datetime | None:
    """An ISO 8601 time (as ``as_dict()`` writes them) in UTC, or None for other text."""
    if len(value) < 19 or value[4] != "-" or value[10] not in "T ":
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(datetime.UTC) if moment.tzinfo else moment


def _key(name: str, format: Callable[[Any], str] = text) -> Callable[[Item], str]:
    return lambda item: format(item.get(name))


def status(item: Item) -> str:
    """The status, and why the operation waits when it waits: ``paused (health)``."""
    name = str(item.get("status") or "-")
    why = item.get("paused_by") or (item.get("hold_reason") if item.get("on_hold_until") else None)
    return f"{name} ({why})" if why else name


def _jobs(item: Item) -> str:
    counts = [item.get(k) or 0 for k in ("jobs_succeeded", "jobs_failed", "jobs_running")]
    return "{:,}/{:,}/{:,}".format(*counts)


def _error(item: Item) -> str:
    name = item.get("exception_class") or ""
    message = " ".join(str(item.get("exception_message") or "").split())
    joined = f"{name}: {message}" if name and message else name or message
    return joined[:117] + "..." if len(joined) > 120 else joined or "-"


def _range(item: Item) -> str:
    low, high = item.get("min_cursor"), item.get("max_cursor")
    return f"{_cursor(low)} .. {_cursor(high)}"


def _cursor(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else "-"
    return "-" if value is None else str(value)


OPERATION_COLUMNS: list[Column] = [
    ("ID", _key("id")),
    ("CLASS", _key("job_class_name")),
    ("TABLE", lambda i: f"{i.get('table_name')}.{i.get('column_name')}"),
    ("STATUS", status),
    ("PROGRESS", _key("progress_percent", percent)),
    ("ROWS", _key("processed_tuple_count")),
    ("ROWS/S", _key("rows_per_second")),
    ("ETA", _key("eta", duration)),
    ("JOBS OK/FAILED/RUNNING", _jobs),
    ("CREATED", _key("created_at")),
]
FAILURE_COLUMNS: list[Column] = [
    ("OPERATION", _key("operation_id")),
    ("JOB", _key("job_id")),
    ("ATTEMPTS", _key("attempts")),
    ("RANGE", _range),
    ("ERROR", _error),
    ("FAILED AT", _key("failed_at")),
]
JOB_COLUMNS: list[Column] = [
    ("JOB", _key("id")),
    ("STATUS", _key("status")),
    ("BATCH", _key("batch_size")),
    ("ROWS", _key("processed_tuple_count")),
    ("DURATION", _key("duration", duration)),
    ("ROWS/S", _key("rows_per_second")),
    ("ATTEMPTS", _key("attempts")),
    ("STARTED", _key("started_at")),
    ("ERROR", _error),
]
DISABLED_COLUMNS: list[Column] = [
    ("CLASS", _key("job_class_name")),
    ("REASON", _key("reason")),
    ("BY", _key("disabled_by")),
    ("SINCE", _key("disabled_at")),
    ("UNFINISHED OPERATIONS", _key("unfinished_operations")),
]
_COLUMNS = {
    "operations": OPERATION_COLUMNS,
    "failures": FAILURE_COLUMNS,
    "jobs": JOB_COLUMNS,
    "disabled": DISABLED_COLUMNS,
}
#: what an empty listing says
EMPTY = {
    "operations": "no operations",
    "failures": "no failed jobs",
    "jobs": "no jobs yet",
    "disabled": "no disabled classes",
}


def table(kind: str, items: tuple[Item, ...] | list[Item]) -> tuple[list[str], list[list[str]]]:
    """The headers and the formatted cells of ``items`` of ``kind`` (see ``_COLUMNS``)."""
    columns = _COLUMNS[kind]
    return [name for name, _ in columns], [[cell(item) for _, cell in columns] for item in items]


def fields(operation: Item) -> list[tuple[str, str]]:
    """Every field of one operation, named and formatted (``show``)."""
    special: dict[str, Callable[[Any], str]] = {
        "progress_percent": percent,
        "eta": duration,
        "interval_seconds": duration,
    }
    return [(name, special.get(name, text)(value)) for name, value in operation.items()]


def as_json(result: Result) -> str:
    """The result as JSON: stable keys, values JSON can hold (see ``as_dict()``)."""
    return json.dumps(result.as_json_value(), indent=2, default=str)


def as_markdown(result: Result) -> str:
    """The result as markdown: a table, an operation's fields and jobs, or one line."""
    if isinstance(result, Listing):
        return _markdown_table(result.kind, result.items)
    if isinstance(result, Detail):
        lines = [f"**operation {result.operation.get('id')}**", ""]
        lines += [f"- {name}: `{value}`" for name, value in fields(result.operation)]
        return "\n".join([*lines, "", "**last jobs**", "", _markdown_table("jobs", result.jobs)])
    assert isinstance(result, Done)
    return result.message


def _markdown_table(kind: str, items: tuple[Item, ...] | list[Item]) -> str:
    if not items:
        return f"_{EMPTY[kind]}_"
    headers, rows = table(kind, items)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")
