"""Structured logs: one JSON object per event, with a stable ``message`` name.

Operators filter on ``message`` (``background_operation_worker_transition_event``...), so the
names here are part of the public contract. Events go through the standard ``logging``
module (logger ``dramatiq_bbo``); :class:`JsonFormatter` renders any record as one JSON line,
and events carry their fields in ``record.bbo`` so an application's own formatter can use them.
"""

from __future__ import annotations

import datetime
import json
import logging
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
    """Log one structured event named ``message`` with ``fields``."""
    if not logger.isEnabledFor(level):
        return
    payload = {"message": message, **fields}
    logger.log(level, message, extra={"bbo": payload})


class JsonFormatter(logging.Formatter):
    """Render a log record as one JSON object per line (ISO time, level, logger, fields)."""

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
#: a ChatOps command failed in an unexpected way (the user got a short apology; the error
#: and its traceback are in this event)
CHATOPS_COMMAND_FAILED = "background_operation_chatops_command_failed"
