"""Every worker process runs a scheduler pass every few seconds: the watchdog.

A runner that dies (kill -9, OOM) or freezes stops renewing its job's lease; the job must be
taken over soon after the lease expires, not at the next minute tick. So each ``dramatiq``
worker process runs :func:`~dramatiq_bbo.pipeline.scheduler.tick` on every configured
database every ``scheduler_pass_seconds`` (5 s by default; 0 turns it off) in a daemon thread:
jobs past their lease go back to pending and their operations — and any operation left
without a live stage, e.g. whose message died with a worker — are handed to the
orchestrator. With the defaults a dead worker's job runs again within about
``lease_seconds`` + ``scheduler_pass_seconds`` (35 s).

Why a thread and not a delayed "watchdog" message: a message needs a free worker thread and a
live consumer to run, and a busy pipeline's threads are all running long jobs, so it would
wait behind them; and a message taken by a dying worker is exactly what is being recovered.
A pass is cheap (a few indexed statements, each its own short transaction skipping locked
rows, see :mod:`.scheduler`), and passes from many processes serialise on the scheduler's
advisory lock only for their dispatch step.
"""

from __future__ import annotations

import threading

from ..db import REGISTRY
from ..logs import logger
from . import scheduler


class Watchdog:
    """The process's pass thread; :meth:`start` at worker boot, :meth:`stop` at shutdown."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if float(REGISTRY.settings.scheduler_pass_seconds) <= 0:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="bbo-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread = None

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(float(REGISTRY.settings.scheduler_pass_seconds)):
            for name in REGISTRY.names():
                if stop.is_set():
                    return
                try:
                    report = scheduler.tick(name)
                except Exception:  # the next pass tries again
                    logger.exception("scheduler pass on database %s failed", name)
                    continue
                if report.recovered or report.dispatched:
                    logger.info(
                        "scheduler pass on %s: %d job(s) recovered, %d operation(s) dispatched",
                        name,
                        report.recovered,
                        len(report.dispatched),
                    )


WATCHDOG = Watchdog()
