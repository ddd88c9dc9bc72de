"""What the web page's tests share: operation classes over a ``counters`` table, a client
that speaks to the page as a browser does (cookies, CSRF token read from the page)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq_bbo as bbo
from dramatiq_bbo.jobs.inline import run_to_completion
from dramatiq_bbo.state.records import OperationStatus

#: what an attacker would write into an argument or an exception message
SCRIPT = "<script>window.bboOwned = true</script>"


class Touch(bbo.BaseOperation):
    """One visit per row."""

    name = "web.touch"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


class FailWithScript(bbo.BaseOperation):
    """Fails its first sub-batch with an exception message holding a script tag."""

    name = "web.fail_with_script"
    operation_name = "update_all"
    pause_ms = 0
    interval_seconds = 0

    def perform(self) -> None:
        for _ in self.each_sub_batch():
            raise RuntimeError(f"bad row {SCRIPT} {self.arguments.get('note')}")


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


class SlowRunner:
    """Runs an operation in-process on a thread, as a worker would but slowly (a pause per
    sub-batch through the stop check); stopped by pause/cancel, it waits and runs again once
    the operation is active, until it ends or ``stop()``."""

    def __init__(self, operation_id: Any, seconds_per_sub_batch: float) -> None:
        self.operation_id = operation_id
        self.delay = seconds_per_sub_batch
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowRunner:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def _slow(self) -> str | None:
        time.sleep(self.delay)
        return "test stopped" if self.stopping.is_set() else None

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                record = bbo.get_operation(self.operation_id)
                if not record.unfinished:
                    return
                if record.status in (OperationStatus.QUEUED, OperationStatus.ACTIVE):
                    run_to_completion(self.operation_id, stop_check=self._slow)
                else:
                    self.stopping.wait(0.05)
        except BaseException as exc:  # reported by the test
            self.error = exc


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)
