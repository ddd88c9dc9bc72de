"""Structured logs: one event per fact, with a stable ``message`` name and its fields.

Operators filter on ``message`` (``background_operation_worker_transition_event``...), so the
names here are part of the public contract. Events go through the standard ``logging``
module (logger ``dramatiq_bbo``) and read well under any formatter: the message text is the
name followed by the fields as ``key=value`` (``background_operation_health_signal
indicator=replication_lag signal=stop reason="lag 12s above 10s" operation_id=42 ...``), so the
plain format of the ``dramatiq`` command shows which indicator said stop and why. The fields
also travel unrendered in ``record.bbo`` (the name as ``message``): :class:`JsonFormatter`
prints them as one JSON object per line, and an application's own formatter can use them.
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import re
from typing import Any

logger = logging.getLogger("dramatiq_bbo")

WORKER_TRANSITION = "background_operation_worker_transition_event"
JOB_TRANSITION = "background_operation_job_transition_event"
OPTIMIZATION = "background_operation_worker_optimization_event"
DUPLICATE_ENQUEUE = "background_operation_duplicate_enqueue"
HEALTH_SIGNAL = "background_operation_health_signal"
HEALTH_HOLD = "background_operation_health_hold"
SCOPE_NOT_INDEXED = "background_operation_scope_not_indexed"
CONNECTION_RETRY = "background_operation_connection_retry"
CONNECTION_GAVE_UP = "background_operation_connection_gave_up"
CONNECTION_LOST = "background_operation_connection_lost"
#: a middleware's before_job reason held an operation
MIDDLEWARE_HOLD = "background_operation_middleware_hold"
#: once per process and operation: its table no longer matches the enqueued one
TABLE_HOLD = "background_operation_table_hold"
#: once per process and class: an operation is held because of its class
UNKNOWN_CLASS_HOLD = "background_operation_unknown_class_hold"
#: once per process: an operation was enqueued, but no pipeline actor is declared here
PIPELINE_NOT_SET_UP = "background_operation_pipeline_not_set_up"
#: a runner message found its job or operation no longer in a state to run (the reason says)
RUNNER_SKIPPED = "background_operation_runner_skipped"
#: an organization-scoped operation was held because its organization is read-only
READ_ONLY_HOLD = "background_operation_read_only_hold"
#: the organization_read_only check raised or gave an answer it may not (counted read-only)
READ_ONLY_CHECK_FAILED = "background_operation_read_only_check_failed"
#: an organization's read-only flag in bbo.read_only_organizations was set or lifted
READ_ONLY_FLAG = "background_operation_read_only_flag"

# -- sliding partitions (dramatiq_bbo.partitions, docs/partitions.md) --------------------------
#: the next partition of the four state tables was opened (it is current from now on)
PARTITION_OPENED = "background_operation_partition_opened"
#: idle unfinished operations were moved into the current partition (``moved`` of them)
PARTITION_OPERATIONS_MOVED = "background_operation_partition_operations_moved"
#: a partition past its retention was detached and dropped
PARTITION_DROPPED = "background_operation_partition_dropped"
#: a partition past its retention is kept: it still holds unfinished work
PARTITION_KEPT = "background_operation_partition_kept"
#: a step of the partition manager failed (a lock timeout, say); retried at its next run
PARTITION_STEP_FAILED = "background_operation_partition_step_failed"


def operation_fields(operation: Any, *extra: str) -> dict[str, Any]:
    """The fields naming ``operation`` (an OperationRecord) in an event about it: its id,
    class, table and database, plus the ``extra`` attributes named (``column_name``...)."""
    fields = {
        "operation_id": str(operation.id),
        "job_class_name": operation.job_class_name,
        "table_name": operation.table_name,
        "database_name": operation.database_name,
    }
    fields.update((name, getattr(operation, name)) for name in extra)
    return fields


def event(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event named ``message`` with ``fields``: readable as text under
    any formatter, structured for :class:`JsonFormatter` (``record.bbo``)."""
    if not logger.isEnabledFor(level):
        return
    payload = {"message": message, **fields}
    # no args: a ``%`` in a value is never read as a placeholder
    logger.log(level, render(message, fields), extra={"bbo": payload})


#: a value printed bare; anything else (spaces, quotes, ``=``, nothing at all) is quoted
_BARE = re.compile(r"[^\s\"'=\\]+")


def render(message: str, fields: dict[str, Any]) -> str:
    """``message key=value ...``: fields in the order given, None left out, a value with
    spaces or quotes in double quotes with JSON escapes (logfmt, as log tools parse it)."""
    parts = [message]
    for key, value in fields.items():
        if value is not None:
            parts.append(f"{key}={_text(value)}")
    return " ".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, enum.Enum):
        text = str(value.value)
    elif isinstance(value, datetime.datetime | datetime.date):
        text = value.isoformat()
    elif isinstance(value, list | tuple | dict):  # cursors, settings
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    else:  # text, numbers, uuids
        text = str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """Render a log record as one JSON object per line: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, then an event's ``message`` name and fields as they were logged (another
    record's text as ``message``), and ``exception`` when there is one.

    Attach it to a handler of the ``dramatiq_bbo`` logger (or the root logger) for logs a
    machine reads: ``handler.setFormatter(dramatiq_bbo.logs.JsonFormatter())``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "bbo", None)
        if isinstance(fields, dict):
            payload.update(fields)
        else:
            payload["message"] = record.getMessage()
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def install_json_handler(level: int = logging.INFO) -> logging.Handler:
    """Attach a JSON stderr handler to the ``dramatiq_bbo`` logger (CLI, demo, examples)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


# -- operator steering: one event per mutation, naming who did it (field ``by``) --------------
OPERATION_PAUSED = "background_operation_paused"
OPERATION_RESUMED = "background_operation_resumed"
OPERATION_CANCELLED = "background_operation_cancelled"
OPERATION_RETRIED = "background_operation_retried"
OPERATION_UPDATED = "background_operation_updated"
OPERATION_FINALIZED = "background_operation_finalized"
CLASS_DISABLED = "background_operation_class_disabled"
CLASS_ENABLED = "background_operation_class_enabled"
#: a step of moving an organization to another cell committed (dramatiq_bbo.cells), and the
#: move's end
ORGANIZATION_MOVE_STEP = "background_operation_organization_move_step"
ORGANIZATION_MOVED = "background_operation_organization_moved"
#: a ChatOps command failed in an unexpected way (the user got a short apology; the error
#: and its traceback are in this event)
CHATOPS_COMMAND_FAILED = "background_operation_chatops_command_failed"
