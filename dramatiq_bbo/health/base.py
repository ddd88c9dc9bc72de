"""The shapes every health indicator shares: the signal, its result, what it is asked about.

An indicator answers one question about the database ("is autovacuum working on this
table?") with a :class:`Signal` and a human reason. Only ``STOP`` halts work; ``UNKNOWN``
(the indicator failed or timed out) and ``NOT_AVAILABLE`` (the server cannot tell, e.g.
archiving is off or the role may not read it) are logged and let work go on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..health_thresholds import DEFAULTS
from ..state.records import OperationRecord


class Signal(enum.Enum):
    NORMAL = "normal"
    STOP = "stop"
    UNKNOWN = "unknown"
    NOT_AVAILABLE = "not_available"


@dataclass(frozen=True)
class Result:
    """One indicator's answer."""

    indicator: str
    signal: Signal
    reason: str = ""

    @property
    def stop(self) -> bool:
        return self.signal is Signal.STOP


class Context:
    """What an indicator is asked about: an operation, on a connection to its database.

    ``connection`` is an autocommit psycopg 3 connection, not inside the caller's
    transaction; indicators must only read. The evaluator opens it on first use (``connect``),
    so an indicator that never touches it — an HTTP query, most user callables — costs no
    connection. ``settings`` are the health thresholds in force (defaults merged with
    ``configure(health={...})``).
    """

    __slots__ = ("operation", "database", "settings", "_connection", "_connect")

    def __init__(
        self,
        operation: OperationRecord,
        connection: Any,
        database: str,
        settings: Mapping[str, Any],
        *,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        self.operation = operation
        self.database = database
        self.settings = settings
        self._connection = connection
        self._connect = connect

    def threshold(self, name: str) -> Any:
        """Threshold ``name`` in force: from ``settings``, else its documented default (an
        indicator checked by hand may be given only some thresholds)."""
        return self.settings.get(name, DEFAULTS[name])

    @property
    def connection(self) -> Any:
        if self._connection is None and self._connect is not None:
            self._connection = self._connect()
        return self._connection

    def __repr__(self) -> str:
        return f"Context(operation={self.operation.id!r}, database={self.database!r})"


@runtime_checkable
class Indicator(Protocol):
    """One health question. ``cache_seconds`` is how long its answer may be reused for the
    same database and table (0: ask every time).

    Optional attributes the evaluator reads when present (defaults in brackets):

    - ``per_table`` [True]: the answer depends on the operation's table; False for a
      server- or database-wide answer, cached once for every table.
    - ``context.connection`` is a pooled connection to the operation's database, opened on
      first use, with ``statement_timeout`` at 80% of the indicator's timeout.
    - ``timeout_seconds`` [None]: its own deadline instead of the
      ``indicator_timeout_seconds`` setting.
    """

    name: str
    cache_seconds: float

    def check(self, context: Context) -> Result: ...
