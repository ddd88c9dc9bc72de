"""dramatiq's default middleware, optionally without Prometheus.

dramatiq's Prometheus middleware expects its multi-process launcher: in each worker process
it forks an HTTP exposition server (port 9191) and writes multi-process files. A process that
runs workers in-process (the demo, tests, benchmarks) or two test runs side by side should
build their broker without it; this is the one place that spells the rest of the list.
"""

from __future__ import annotations

from typing import Any

from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Prometheus,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)


def default_middleware(*, prometheus: bool = False) -> list[Any]:
    """Fresh instances of dramatiq's default middleware (Prometheus only if asked)."""
    middleware: list[Any] = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks()]
    middleware += [Pipelines(), Retries()]
    if prometheus:
        middleware.insert(0, Prometheus())
    return middleware
