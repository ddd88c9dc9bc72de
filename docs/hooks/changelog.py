"""MkDocs hook: the site's changelog page is ``CHANGELOG.md`` at the repository's root.

The changelog lives at the root, where people and tools look for it; this hook adds it to
the site as ``changelog.md`` at build time, so there is one file and no copy to keep in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

CHANGELOG = Path(__file__).resolve().parents[2] / "CHANGELOG.md"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "changelog.md", content=CHANGELOG.read_text("utf-8")))
    return files
