"""docs/reference/settings.md is generated from ``Settings`` and lists exactly its fields
(and the health thresholds): it cannot drift from the code."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType

from dramatiq_bbo.health_thresholds import HealthSettings
from dramatiq_bbo.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    path = ROOT / "docs" / "hooks" / "settings_reference.py"
    spec = importlib.util.spec_from_file_location("settings_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_lists_exactly_the_settings_fields() -> None:
    reference = generator()
    listed = reference.listed_names(reference.PAGE.read_text(encoding="utf-8"))
    expected = [f.name for f in dataclasses.fields(Settings) if f.name != "health"]
    expected += [f"health.{f.name}" for f in dataclasses.fields(HealthSettings)]
    assert sorted(listed) == sorted(expected)
    assert len(listed) == len(set(listed))


def test_the_committed_page_is_the_generated_one() -> None:
    reference = generator()
    assert reference.PAGE.read_text(encoding="utf-8") == reference.render(), (
        "docs/reference/settings.md is stale: run python docs/hooks/settings_reference.py"
    )


def test_each_row_has_its_default_and_description() -> None:
    reference = generator()
    rows = {
        line.split(" | ")[0].strip("| `"): line.split(" | ")
        for line in reference.render().splitlines()
        if line.startswith("| `")
    }
    assert rows["lease_seconds"][1:3] == ["`30.0`", "seconds"]
    assert rows["max_running_jobs"][1] == "`10`"
    assert "an int in 1..10_000" in rows["max_running_jobs"][3]
    assert rows["health.max_connection_ratio"][1] == "`0.9`"
    # a comment written once above a group describes each field of the group
    assert rows["smtp_port"][4] == rows["smtp_host"][4] != ""
    assert all(row[4].strip(" |") for row in rows.values()), "a setting without a description"
