"""The documentation site builds with MkDocs in strict mode: any warning (a broken link or
anchor, a page missing from the nav, a stale configuration reference) fails the build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    assert (tmp_path / "tutorial" / "index.html").exists()
    assert (tmp_path / "reference" / "settings" / "index.html").exists()
    assert (tmp_path / "changelog" / "index.html").exists()
