"""The daemon threads indicator checks run on, kept for reuse between checks.

Starting a thread for each check would cost about as much as a cheap check itself, and a
user indicator is asked before every sub-batch. Idle workers wait for the next check and end
after a minute without one; a check that hangs keeps its worker (the evaluator has stopped
waiting for it) and the next check gets another. Workers are daemon threads so that a hung
indicator never blocks the process from exiting (``concurrent.futures`` joins its threads).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

Task = Callable[[], None]

#: an idle worker ends after this many seconds without a check
IDLE_SECONDS = 60.0


class Workers:
    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, task: Task) -> None:
        """Run ``task`` on an idle worker, or on a new one when none is idle."""
        with self._lock:
            self._tasks.put(task)
            if self._idle > 0:
                self._idle -= 1
                return
        threading.Thread(target=self._work, name="bbo-health", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._tasks.empty():  # nothing was handed to this idle worker
                        self._idle -= 1
                        return
                continue
            task()  # tasks catch their own errors (see evaluator._start)
            with self._lock:
                self._idle += 1


WORKERS = Workers()
