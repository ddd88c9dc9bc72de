"""Who steers: the operator name (``by=``) every steering call logs and may store.

Operators act through several surfaces (the API, the command line, a chat bot), and the log
must answer "who paused this?" whichever they used, so every mutation takes ``by`` — a login,
a chat handle, ``"cli:alice"``, whatever the caller calls its user — checked here once.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidSteering
from .settings import clean_text

#: the longest operator name ``by`` may hold (the column ``disabled_by`` holds as much)
MAX_OPERATOR_LENGTH = 255


def operator(by: Any) -> str | None:
    """``by`` as it is logged and stored: None, or text of 1 to 255 characters without NUL
    (InvalidSteering otherwise, before anything is written)."""
    if by is None:
        return None
    if not isinstance(by, str) or not by.strip() or not clean_text(by):
        raise InvalidSteering(f"by must be a non-empty operator name (text), got {by!r}")
    if len(by) > MAX_OPERATOR_LENGTH:
        raise InvalidSteering(
            f"by must be at most {MAX_OPERATOR_LENGTH} characters, got {len(by)}: {by[:40]!r}..."
        )
    return by
