"""``dramatiq-bbo web`` serves the page alone: on 127.0.0.1 by default, read-only without
``--allow-actions``. One real process (the command is what the check is about)."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.web.config import WebSettings
from tests.web.web_support import wait_for


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status(url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, data=data, timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def test_the_command_serves_the_page_read_only_on_localhost(dsn: str) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq_bbo.cli.main", "web", "--dsn", dsn, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        status, page = wait_for(lambda: _status(base + "/")[0] and _status(base + "/"), 15, "web")
        assert status == 200 and "Operations" in page
        refused, _ = _status(f"{base}/operations/1/pause", data=b"csrf_token=x")
        assert refused == 403
        assert _status(base + "/health")[0] == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/" in stderr
    assert dsn not in stderr


@pytest.mark.parametrize("option", [["--port", "0"], ["--port", "99999"]])
def test_the_command_refuses_a_bad_port(option: list[str]) -> None:
    from dramatiq_bbo.cli.main import EXIT_USAGE, main

    assert main(["web", "--dsn", "postgresql://nowhere/x", *option]) == EXIT_USAGE


def test_websettings_offers_the_default_database_first() -> None:
    bbo.configure(databases={"zeta": "postgresql://nowhere/x", "main": "postgresql://nowhere/y"})
    try:
        settings = WebSettings(None, None, "t", b"s" * 16, 5.0, 50, None)  # type: ignore[arg-type]
        assert settings.database_names() == ("main", "zeta")
    finally:
        bbo.reset()
