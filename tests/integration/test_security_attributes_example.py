"""``examples/security_attributes_bulk_update.py``: the whole tracked flow on real dramatiq
workers and a real SMTP server — service, scheduler actor, batch operation reporting each
project, one email listing every archived project, then nothing left."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "security_attributes_bulk_update.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("security_attributes_bulk_update", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_updates_reports_emails_the_failures_and_cleans_up(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example()
    report = example.run(dsn, projects=60, timeout=60)

    assert report["updated"] == 54 and report["left"] == 0
    [message] = report["emails"]
    assert message["To"] == "alice@example.com"
    assert "6 of 60 items failed" in message["Subject"]
    text = report["text"]
    assert "Total items: 60" in text and "Successful: 54" in text and "Failed: 6" in text
    for archived in range(10, 61, 10):
        assert f"https://git.example.com/acme/project-{archived}\r\n" in text
    assert "tracked operations left: 0" in capsys.readouterr().out
