"""Stop while the server writes WAL faster than a threshold.

WAL volume is what archiving, standbys and backups must absorb; a bulk operation that
multiplies it makes replicas fall behind and ``pg_wal`` grow. The rate is the WAL written
between two checks of this indicator (``pg_current_wal_lsn()``) divided by the time between
them — the whole server's WAL, the operation's and everyone else's. The previous sample is kept
per server and database in the indicator instance, so the first check only takes a sample.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from ..queries import query
from .base import Context, Result, Signal

MIB = 1024 * 1024


@dataclass(frozen=True)
class _Sample:
    at: float  # time.monotonic()
    position: float  # bytes since 0/0


class WalRate:
    """``STOP`` when WAL was written faster than ``max_wal_bytes_per_second`` since the
    previous check.

    Settings (``bbo.configure(health={...})``), defaults in :attr:`defaults`:

    - ``max_wal_bytes_per_second`` (``64 MiB``): the highest acceptable WAL rate of the
      server, in bytes per second.
    - ``min_wal_rate_interval_seconds`` (``1.0``): a check sooner than this after the
      previous sample repeats the previous answer instead of measuring a rate over a
      window too short to mean anything.

    ``NORMAL`` ("first sample") on the first check of a server and database;
    ``NOT_AVAILABLE`` on a standby, which writes no WAL of its own.
    """

    name = "wal_rate"
    cache_seconds = 1.0
    per_table = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[tuple[Any, ...], _Sample] = {}
        self._answers: dict[tuple[Any, ...], Result] = {}

    def check(self, context: Context) -> Result:
        with context.connection.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("health_wal_position")).fetchone()
        if row["in_recovery"]:
            return Result(self.name, Signal.NOT_AVAILABLE, "server is a standby")
        sample = _Sample(time.monotonic(), float(row["position"]))
        info = context.connection.info
        key = (info.host, info.port, context.database)
        limit = float(context.threshold("max_wal_bytes_per_second"))
        min_interval = float(context.threshold("min_wal_rate_interval_seconds"))
        with self._lock:
            previous = self._samples.get(key)
            if previous is None:
                self._samples[key] = sample
                return Result(self.name, Signal.NORMAL, "first sample")
            elapsed = sample.at - previous.at
            if elapsed < min_interval or elapsed <= 0:
                earlier = self._answers.get(key)
                return earlier or Result(
                    self.name, Signal.NORMAL, f"first sample less than {min_interval:g} s ago"
                )
            self._samples[key] = sample
            rate = max(0.0, sample.position - previous.position) / elapsed
            reason = (
                f"WAL written at {format_bytes(rate)}/s over the last {elapsed:.1f} s "
                f"(stop above {format_bytes(limit)}/s)"
            )
            result = Result(self.name, Signal.STOP if rate > limit else Signal.NORMAL, reason)
            self._answers[key] = result
            return result


def format_bytes(count: float) -> str:
    """``1536`` → ``"1.5 KiB"``: sizes in reasons, readable at a glance."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns
