"""Small helpers shared by tests: polling with a deadline instead of fixed sleeps."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from dramatiq_bbo.pipeline.runtime import Messenger, current, installed


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate!r}")
        time.sleep(interval)


def without_broker() -> contextlib.AbstractContextManager[Any]:
    """The runtime in force minus its broker, for the block: the stages write no message (the
    test plays them, or only a scheduler pass may start the work), the middleware stays."""
    return installed(dataclasses.replace(current(), messenger=Messenger()))
