"""Every value a tracking call takes, checked before anything is written.

A bad value raises :class:`~dramatiq_bbo.errors.InvalidTrackingInput` naming it, so the
caller learns at once and the store never holds half an entry. The limits are the same as
the CHECK constraints of ``schema/sql/0010_tracking.sql``, which back them up.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import InvalidTrackingInput
from ..settings import Settings, clean_text
from .records import FailedItem

#: bigint, the type of the ids and counters
BIGINT_MAX = 2**63 - 1
OPERATION_TYPE_MAX = 100
#: error codes: ``service_error``, ``unexpected_error`` or one of your own in this shape
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
SERVICE_ERROR = "service_error"
UNEXPECTED_ERROR = "unexpected_error"
#: longest accepted text of each field of a failed item
FIELD_LIMITS = {
    "entity_id": 255,
    "entity_type": 100,
    "entity_name": 1000,
    "entity_full_path": 2000,
    "error_message": 4000,
}


def tracked_id(value: Any) -> int:
    """A tracked operation id: a positive int (bigint)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= BIGINT_MAX:
        raise InvalidTrackingInput(
            f"a tracked operation id must be a positive int, got {short(value)}"
        )
    return value


def count(name: str, value: Any, *, low: int = 0) -> int:
    """A count (``total_items``, ``n``...): an int from ``low`` to the bigint maximum."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= BIGINT_MAX:
        raise InvalidTrackingInput(f"{name} must be an int >= {low}, got {short(value)}")
    return value


def operation_type(value: Any) -> str:
    """An operation type: 1..100 characters of clean text (``attribute_update``...)."""
    if not isinstance(value, str) or not value.strip() or not clean_text(value):
        raise InvalidTrackingInput(
            f"operation_type must be a non-empty string without NUL, got {short(value)}"
        )
    if len(value) > OPERATION_TYPE_MAX:
        raise InvalidTrackingInput(
            f"operation_type is {len(value)} characters long, more than {OPERATION_TYPE_MAX}"
        )
    return value


def user_id(value: Any) -> int:
    """The id of the user who started the operation: an int (bigint)."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > BIGINT_MAX:
        raise InvalidTrackingInput(f"user_id must be an int, got {short(value)}")
    return value


def parameters(value: Any, settings: Settings) -> str:
    """The operation's parameters as canonical JSON (a dict), within enqueue's size limit
    (``max_arguments_bytes``) and holding nothing ``jsonb`` refuses."""
    if value is not None and not isinstance(value, dict):
        raise InvalidTrackingInput(f"parameters must be a dict, got {short(value)}")
    try:
        text = json.dumps(
            value or {}, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidTrackingInput(f"parameters are not JSON-serialisable: {exc}") from None
    if not clean_text(text) or "\\u0000" in text:
        raise InvalidTrackingInput("parameters hold a NUL or a lone surrogate")
    size = len(text.encode("utf-8"))
    if size > settings.max_arguments_bytes:
        raise InvalidTrackingInput(
            f"parameters take {size} bytes as JSON, more than max_arguments_bytes "
            f"({settings.max_arguments_bytes})"
        )
    return text


def short(value: Any, limit: int = 100) -> str:
    """``repr(value)`` cut to ``limit`` characters (never fails)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failed_item(
    *,
    entity_id: Any,
    entity_type: Any,
    entity_name: Any,
    entity_full_path: Any,
    error_message: Any,
    error_code: Any = UNEXPECTED_ERROR,
) -> FailedItem:
    """A failed item with every entity field given; ``entity_id`` may be an int."""
    if isinstance(entity_id, int) and not isinstance(entity_id, bool):
        entity_id = str(entity_id)
    fields = {
        "entity_id": entity_id,
        "entity_type": entity_type,
        "entity_name": entity_name,
        "entity_full_path": entity_full_path,
        "error_message": error_message,
    }
    for name, value in fields.items():
        _text_field(name, value, FIELD_LIMITS[name])
    if not isinstance(error_code, str) or not ERROR_CODE.fullmatch(error_code):
        raise InvalidTrackingInput(
            f"error_code must match {ERROR_CODE.pattern} ({SERVICE_ERROR!r}, "
            f"{UNEXPECTED_ERROR!r} or one of your own), got {short(error_code)}"
        )
    return FailedItem(error_code=error_code, **fields)


def _text_field(name: str, value: Any, limit: int) -> None:
    if not isinstance(value, str) or not value.strip() or not clean_text(value):
        raise InvalidTrackingInput(
            f"{name} of a failed item must be a non-empty string without NUL, got {short(value)}"
        )
    if len(value) > limit:
        raise InvalidTrackingInput(
            f"{name} of a failed item is {len(value)} characters long, more than {limit}"
        )
