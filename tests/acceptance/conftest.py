"""Acceptance-test plumbing: real ``dramatiq`` worker processes (:mod:`.workers`), and the
tail of their logs appended to the report of a test that fails while they ran."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from tests.acceptance.workers import WORKER_GROUPS, dramatiq_workers

__all__ = ["dramatiq_workers", "web_process"]


@pytest.fixture
def web_process(dsn: str) -> Iterator[None]:
    """The test process as the application's web process: bbo configured, the pipeline set up
    on a broker of the test database, so enqueue (and enable) wake the workers at once."""
    bbo.configure(dsn=dsn)
    broker = PostgresBroker(url=dsn, results=False)
    bbo.setup(broker)
    yield
    broker.close()
    bbo.reset()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for index, group in enumerate(item.stash.get(WORKER_GROUPS, []), start=1):
        report.sections.append(
            (f"dramatiq workers #{index} ({group.log_path}), last lines", group.tail(80))
        )
