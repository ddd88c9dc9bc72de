"""The web page in a real browser (the system's headless Chromium, driven by Playwright):
the list shows a running operation's progress advance; its page pauses it, shows the status
change, resumes it, and it finishes. The operation runs in this process on a thread, slowly
(tests/web/web_support.py), the page is served by uvicorn on a thread; screenshots are saved
under ``test-artifacts/web/``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

import dramatiq_bbo as bbo
from dramatiq_bbo.web import create_app
from tests.integration.steering_support import make_counters, visits
from tests.web.web_support import SlowRunner, Touch, wait_for

CHROMIUM = Path(os.environ.get("BBO_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
ROWS = 1_500


def _chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set BBO_CHROMIUM)"
    if os.environ.get("BBO_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def served(dsn: str) -> Iterator[str]:
    """The page, with every action allowed (as ``browser-test``), on a free local port."""
    bbo.configure(dsn=dsn)
    app = create_app(authorize=lambda request, action, target: "browser-test", refresh_seconds=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        bbo.reset()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    executable = _chromium()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def percent_shown(page: Any, operation_id: Any) -> float:
    """The progress the list shows for the operation (0 while unknown); the page reloads
    itself, so a read that lands mid-reload is tried again."""
    for _ in range(50):
        try:
            text = page.locator(f"#operation-{operation_id} td.progress").get_attribute(
                "data-percent", timeout=2_000
            )
            return float(text) if text else 0.0
        except Exception:  # the document was being replaced by its refresh
            time.sleep(0.05)
    raise AssertionError("the list never showed the operation")


def press(page: Any, button: str, shown: str) -> None:
    """Click ``button`` until the page shows ``shown``: the page reloads itself every second,
    and a click that lands on a document being replaced is lost."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(PlaywrightTimeout):
            page.click(button, timeout=2_000)
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_selector(shown, timeout=2_000)
            return
    raise AssertionError(f"the page never showed {shown!r} after {button!r}")


def test_pause_resume_and_finish_from_the_browser(served: str, dsn: str, browser_page: Any) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        make_counters(conn, ROWS)
    operation_id = bbo.enqueue(
        Touch, "counters", "id", batch_size=150, sub_batch_size=15
    ).operation.id
    runner = SlowRunner(operation_id, seconds_per_sub_batch=0.06).start()
    page = browser_page
    try:
        page.goto(served + "/")
        first = wait_for(lambda: percent_shown(page, operation_id), what="progress above 0")
        later = wait_for(
            lambda: percent_shown(page, operation_id) > first, what="the progress to advance"
        )
        assert later
        page.screenshot(path=str(ARTIFACTS / "1-list-running.png"), full_page=True)

        link = page.locator(f"#operation-{operation_id} a").get_attribute("href")
        page.goto(link)
        press(page, "#action-pause", "#status .status-paused")
        assert bbo.get_operation(operation_id).status.name == "PAUSED"
        runner.delay = 0.005  # the pause is seen: the rest may go fast
        page.screenshot(path=str(ARTIFACTS / "2-operation-paused.png"), full_page=True)

        press(page, "#action-resume", "#status .status-active, #status .status-finished")
        page.wait_for_selector("#status .status-finished", timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "3-operation-finished.png"), full_page=True)
    finally:
        runner.stop()
    assert runner.error is None, runner.error
    assert bbo.get_operation(operation_id).status.name == "FINISHED"
    with psycopg.connect(dsn) as conn:
        assert visits(conn) == {1: ROWS}
