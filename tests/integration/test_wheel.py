"""The wheel ships the schema files, and an installed copy finds and applies them.

The checkout is copied (without build artefacts) and built with ``pip wheel``; the wheel is
unzipped and imported by a subprocess whose ``PYTHONPATH`` holds only the unzipped files, so
nothing of the checkout can be picked up by accident.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".tox",
    ".venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".bbo-embedded",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
)

_PROBE = """
import json, sys
import dramatiq_bbo
from dramatiq_bbo.migrations import migrate, schema_directory
report = migrate(sys.argv[1])
print(json.dumps({
    "package": dramatiq_bbo.__file__,
    "schema_directory": str(schema_directory()),
    "applied_now": report.applied_now,
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the checkout (stale build/ dirs never leak in)."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this environment")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCES)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist")]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = (work / "dist").glob("dramatiq_bbo-*.whl")
    return built


def checkout_schema_files() -> list[str]:
    return sorted(p.name for p in (REPO_ROOT / "schema" / "sql").glob("*.sql"))


def test_wheel_ships_every_schema_file_inside_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())

    assert "0001_operations.sql" in checkout_schema_files()
    assert "0002_dramatiq_queue.sql" in checkout_schema_files()
    for name in checkout_schema_files():
        assert f"dramatiq_bbo/schema_sql/{name}" in names
    assert "dramatiq_bbo/cli/main.py" in names
    assert "dramatiq_bbo/py.typed" in names


def test_unzipped_wheel_finds_its_schema_files_and_migrates(
    wheel: Path, empty_dsn: str, tmp_path: Path
) -> None:
    unpacked = (tmp_path / "unpacked").resolve()
    zipfile.ZipFile(wheel).extractall(unpacked)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("BBO_DSN", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = str(unpacked)

    result = subprocess.run(
        [sys.executable, "-c", _PROBE, empty_dsn],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert Path(probe["package"]).is_relative_to(unpacked)
    assert Path(probe["schema_directory"]) == unpacked / "dramatiq_bbo" / "schema_sql"
    assert probe["applied_now"] == [name[:4] for name in checkout_schema_files()]
