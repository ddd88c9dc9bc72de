"""One clock for every time decision: holds, intervals, leases, tracking expiry, partitions.

Python asks :func:`now`; SQL asks ``bbo.now()`` (schema 0011), which is the server's ``now()``
plus the offset of the clock in force. In production the clock is :class:`SystemClock`, the
offset is zero and nothing is ever sent to the server for it. A test installs a
:class:`SimulatedClock` and moves it (``advance(days=7)``); from then on every connection
this process lends out carries the offset in the session setting ``bbo.clock_offset``
(seconds), so SQL and Python agree on what time it is, and a test can run sixty simulated
days in seconds.

What stays on physical time, on purpose: durations measured with ``time.monotonic()`` (a
job's time budget, timeouts, the optimizer's measured seconds per row) and the health
indicators, which read the server's own state (transaction ages, WAL positions). Those are
facts about the machine, not decisions about the calendar.

The simulated clock is per process: a worker started in another process runs on the system
clock, so simulated-time tests drive the pipeline in-process (scheduler ticks and
``run_to_completion``).
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Iterator
from typing import Protocol

__all__ = [
    "Clock",
    "SimulatedClock",
    "SystemClock",
    "current",
    "now",
    "offset_seconds",
    "simulated",
    "use",
]

#: the session setting ``bbo.now()`` adds to the server's ``now()``, in seconds
OFFSET_SETTING = "bbo.clock_offset"


class Clock(Protocol):
    """What the library asks of a clock."""

    def now(self) -> datetime.datetime:
        """The current moment, timezone-aware (UTC)."""

    def offset_seconds(self) -> float:
        """How far this clock is ahead of the system's (negative: behind)."""


class SystemClock:
    """The machine's clock; the one in force unless a test installs another."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def offset_seconds(self) -> float:
        return 0.0


class SimulatedClock:
    """The system clock moved by an offset a test controls. Time still flows (a second of
    real time is a second here), so leases and durations keep their meaning; ``advance``
    jumps ahead, as if the process had slept that long."""

    def __init__(self, offset: datetime.timedelta = datetime.timedelta(0)) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + self._offset

    def offset_seconds(self) -> float:
        return self._offset.total_seconds()

    def advance(self, delta: datetime.timedelta | None = None, **parts: float) -> datetime.datetime:
        """Move the clock forward by ``delta`` or by ``timedelta(**parts)`` (``days=1``);
        returns the new moment. Moving backwards is refused: no decision in the library
        expects time to run back."""
        step = delta if delta is not None else datetime.timedelta(**parts)
        if step < datetime.timedelta(0):
            raise ValueError(f"a clock only moves forward, got {step}")
        with self._lock:
            self._offset += step
        return self.now()

    def travel_to(self, moment: datetime.datetime) -> None:
        """Jump to ``moment`` (timezone-aware, not in the past of this clock)."""
        if moment.tzinfo is None:
            raise ValueError("travel_to needs a timezone-aware moment")
        self.advance(moment - self.now())


_SYSTEM = SystemClock()
_current: Clock = _SYSTEM
#: set once any other clock was installed in this process: from then on connections carry
#: the offset (zero included, so a connection lent during a test never keeps a stale one)
_ever_simulated = False


def current() -> Clock:
    """The clock in force."""
    return _current


def now() -> datetime.datetime:
    """The current moment on the clock in force."""
    return _current.now()


def offset_seconds() -> float:
    """The offset ``bbo.now()`` adds on this process's connections."""
    return _current.offset_seconds()


def use(clock: Clock | None) -> None:
    """Install ``clock`` (``None``: back to the system clock)."""
    global _current, _ever_simulated
    _current = clock if clock is not None else _SYSTEM
    if _current is not _SYSTEM:
        _ever_simulated = True


def carries_offset() -> bool:
    """Whether lent connections must be told the offset (never, unless a test installed a
    clock in this process)."""
    return _ever_simulated


@contextlib.contextmanager
def simulated(offset: datetime.timedelta = datetime.timedelta(0)) -> Iterator[SimulatedClock]:
    """Run a block on a :class:`SimulatedClock`; the previous clock comes back after it."""
    previous = _current
    clock = SimulatedClock(offset)
    use(clock)
    try:
        yield clock
    finally:
        use(previous)
