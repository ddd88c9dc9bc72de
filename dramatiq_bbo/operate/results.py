"""What an operator command returns: data for each surface to render, never text.

A read returns a :class:`Listing` (rows of one kind) or a :class:`Detail` (one operation and
its jobs); a change returns a :class:`Done` (a line saying what was done, and the operation as
it is now). Each has ``as_json_value()``: the ``--json`` output, with stable keys (the views'
column names, see ``docs/operating.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Listing:
    """Rows of one kind (``operations``, ``failures``, ``disabled``), each ``as_dict()``."""

    kind: str
    items: tuple[dict[str, Any], ...]

    def as_json_value(self) -> Any:
        return list(self.items)


@dataclass(frozen=True)
class Detail:
    """One operation and its last jobs (``show``)."""

    operation: dict[str, Any]
    jobs: tuple[dict[str, Any], ...]

    def as_json_value(self) -> Any:
        return {"operation": self.operation, "jobs": list(self.jobs)}


@dataclass(frozen=True)
class Done:
    """A change that was made: one line saying what, and the operation as it is now (or the
    disabled class, for ``disable``)."""

    message: str
    operation: dict[str, Any] | None = None
    kind: str = "operation"

    def as_json_value(self) -> Any:
        return {"message": self.message, self.kind: self.operation}


Result = Listing | Detail | Done
