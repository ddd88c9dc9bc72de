"""The values an operator types, read from text: ids, statuses, durations, sizes, limits.

Every operator surface (the command line, a chat line, later a web form) receives text; these
parsers turn it into the values the reading and steering functions take, or refuse it with
:class:`~dramatiq_bbo.errors.InvalidCommand` naming the option and the value. They run before
anything touches the database, so a malformed command reads and changes nothing.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

from ..errors import BBOError, InvalidCommand
from ..settings import check_value, clean_text
from ..state.records import OperationId, OperationStatus
from ..state.scopes import parse_operation_id

#: the statuses an operator names, as the views spell them
STATUSES: tuple[str, ...] = tuple(status.name.lower() for status in OperationStatus)
#: the two scopes of an operation, as the views spell them
SCOPES: tuple[str, ...] = ("organization", "cell_local")
#: the most rows one read command returns
MAX_LIMIT = 10_000
#: the longest look-back of ``failures --since`` (a year)
MAX_SINCE = datetime.timedelta(days=366)
#: the longest class name accepted (class names are identifiers, not prose)
MAX_NAME_LENGTH = 255
#: the longest reason accepted for disabling a class
MAX_REASON_LENGTH = 1000

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def operation_id(text: str, *, option: str = "ID") -> OperationId:
    """An operation id: an int (cell-local) or a uuid (organization-scoped)."""
    try:
        return parse_operation_id(text)
    except BBOError:
        raise InvalidCommand(
            f"{option}: {text!r} is not an operation id (an int for a cell-local operation, "
            "a uuid for an organization-scoped one)"
        ) from None


def status(text: str, *, option: str = "--status") -> str:
    """One of the six statuses, case-insensitive."""
    value = text.strip().lower()
    if value not in STATUSES:
        raise InvalidCommand(f"{option}: unknown status {text!r}; one of {', '.join(STATUSES)}")
    return value


def scope(text: str, *, option: str = "--scope") -> str:
    """``organization`` or ``cell_local`` (``cell-local`` accepted)."""
    value = text.strip().lower().replace("-", "_")
    if value not in SCOPES:
        raise InvalidCommand(f"{option}: unknown scope {text!r}; one of {', '.join(SCOPES)}")
    return value


def limit(text: str, *, option: str = "--limit") -> int:
    """How many rows to show: 1..``MAX_LIMIT``."""
    value = _int(text, option)
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidCommand(f"{option} must be 1..{MAX_LIMIT:,}, got {text!r}")
    return value


def organization(text: str, *, option: str = "--organization") -> int:
    """An organization id: a positive bigint."""
    value = _int(text, option)
    if not 1 <= value <= 2**63 - 1:
        raise InvalidCommand(f"{option} must be a positive organization id, got {text!r}")
    return value


def class_name(text: str, *, option: str = "CLASS") -> str:
    """An operation class name: non-empty clean text, no whitespace, at most 255 characters."""
    value = text.strip()
    if not value or len(value) > MAX_NAME_LENGTH or not clean_text(value) or " " in value:
        raise InvalidCommand(
            f"{option}: {text!r} is not an operation class name (1..{MAX_NAME_LENGTH} "
            "characters, no spaces)"
        )
    return value


def reason(text: str, *, option: str = "--reason") -> str:
    """A free-text reason, stored as given: clean text of at most 1,000 characters."""
    if not text.strip() or len(text) > MAX_REASON_LENGTH or not clean_text(text):
        raise InvalidCommand(
            f"{option} must be 1..{MAX_REASON_LENGTH} characters of text, got {text!r}"
        )
    return text.strip()


def database_name(text: str, *, option: str = "--database") -> str:
    """A database name as ``configure(databases=...)`` registers it: 1..63 characters."""
    value = text.strip()
    if not 1 <= len(value) <= 63 or not clean_text(value):
        raise InvalidCommand(f"{option} must be a database name of 1..63 characters, got {text!r}")
    return value


def duration(text: str, *, option: str = "--since") -> datetime.timedelta:
    """A positive duration such as ``90s``, ``30m``, ``1h``, ``2d``, ``1w`` or ``1h30m``."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise InvalidCommand(
            f"{option}: {text!r} is not a duration; write e.g. 30m, 1h, 2d or 1h30m"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(compact))
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_SINCE.total_seconds():
        raise InvalidCommand(f"{option} must be above 0 and at most 366d, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def size(setting: str, text: str, *, option: str) -> Any:
    """A batch size, sub-batch size, pause or interval within the bounds of ``setting``."""
    value: Any
    try:
        value = float(text) if setting == "interval_seconds" else _int(text, option)
    except ValueError:
        raise InvalidCommand(f"{option} must be a number, got {text!r}") from None
    return check_value(setting, value, origin=option, error=InvalidCommand)


def _int(text: str, option: str) -> int:
    compact = text.strip().replace("_", "").replace(",", "")
    if not re.fullmatch(r"[+-]?\d{1,19}", compact):
        raise InvalidCommand(f"{option} must be a whole number, got {text!r}")
    return int(compact)
