"""The demo's health hold: a user indicator that answers STOP once, mid-run.

It shows what a real stop does (autovacuum on the table, a WAL archive backlog...) without
waiting for one: the demo *arms* it at ~40% progress; from then on it answers STOP until the
demo sees the hold on the operation row, then NORMAL for good. The pipeline ends the running
job at its checkpoint, the operation is held for ``health_hold_seconds`` and resumes by
itself once the hold has expired.
"""

from __future__ import annotations

import threading
import time
from typing import Any

#: the indicator's name, in logs and in the operation's hold_reason
NAME = "demo_stop"
#: an armed indicator gives up answering STOP after this long, hold seen or not (seconds)
ARMED_AT_MOST = 15.0


class ScriptedStop:
    """The indicator, a callable ``fn(context)`` as ``health.register`` takes."""

    reason = "scripted by the demo at 40% (as if autovacuum had started on the table)"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed_at: float | None = None
        self._done = False

    def arm(self) -> None:
        with self._lock:
            if self._armed_at is None:
                self._armed_at = time.monotonic()

    @property
    def armed(self) -> bool:
        return self._armed_at is not None

    def disarm(self) -> None:
        """The hold happened: answer NORMAL from now on."""
        with self._lock:
            self._done = True

    def stopping(self) -> bool:
        with self._lock:
            if self._armed_at is None or self._done:
                return False
            if time.monotonic() - self._armed_at > ARMED_AT_MOST:
                self._done = True
            return not self._done

    def __call__(self, context: Any) -> Any:
        from ..health import Signal

        return (Signal.STOP, self.reason) if self.stopping() else Signal.NORMAL


def install(indicator: ScriptedStop) -> str | None:
    """Register ``indicator`` with the health layer; why it could not, or None."""
    try:
        from .. import health
    except ImportError as exc:  # a build without the health layer: the demo goes on
        return f"health checks are not available in this build ({exc})"
    health.register(indicator, name=NAME)
    return None


def uninstall(indicator: ScriptedStop) -> None:
    from .. import health

    health.unregister(indicator)
