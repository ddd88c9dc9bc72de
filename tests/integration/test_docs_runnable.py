"""Every code block of the docs marked runnable runs, in page order, on a fresh database.

The marker is an HTML comment on the line before the block's fence (invisible on GitHub and
on the site; the fence keeps its plain language tag, so highlighting is untouched):

- ``<!-- runnable -->`` before a ``python`` block: the block runs as its own script
  (``python -``), in a scratch directory of the page, with ``DATABASE_URL`` set to the test's
  database (migrated); it must exit 0. Before an ``sql`` block: the statements run on that
  database and must not fail.
- ``<!-- runnable file=NAME -->`` before a block: the block is written to ``NAME`` in the
  scratch directory (a module the next blocks and the workers import).
- ``<!-- runnable background -->`` before an ``sh`` block: the command starts in the
  background (its own process group, the virtualenv's ``bin`` first on ``PATH``) and is
  stopped when the page is done, SIGTERM then SIGKILL — real dramatiq workers, for instance.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from dramatiq_bbo.testing.programs import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(
    r"^<!-- runnable(?: (?P<option>background|file=(?P<file>[\w.]+)))? -->\n"
    r"```(?P<lang>\w+)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    option: str | None
    file: str | None

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang})"


def runnable_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(
            page.relative_to(DOCS).as_posix(),
            text.count("\n", 0, match.start()) + 2,
            match["lang"],
            match["code"],
            match["option"],
            match["file"],
        )
        for match in _BLOCK.finditer(text)
    ]


def pages_with_blocks() -> list[Path]:
    return [page for page in sorted(DOCS.rglob("*.md")) if runnable_blocks(page)]


def test_the_marker_is_found_in_the_pages_that_use_it() -> None:
    pages = {page.name for page in pages_with_blocks()}
    assert {"tutorial.md", "monitoring.md"} <= pages
    assert any(block.option == "background" for block in runnable_blocks(DOCS / "tutorial.md"))
    # a marker not followed by a fence is a typo that would silently skip a block
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        markers = re.findall(r"^<!-- runnable", text, flags=re.MULTILINE)
        assert len(markers) == len(runnable_blocks(page)), page


@pytest.mark.parametrize("page", pages_with_blocks(), ids=lambda page: page.name)
def test_runnable_blocks_run(page: Path, dsn: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # dramatiq's Prometheus exposition, if a page's workers start it: a port of its own
        "dramatiq_prom_port": str(free_port()),
        "dramatiq_prom_db": str(tmp_path / "prometheus"),
    }
    background: list[subprocess.Popen[bytes]] = []
    try:
        for block in runnable_blocks(page):
            run_block(block, tmp_path, env, dsn, background)
    finally:
        for process in background:
            stop(process)


def run_block(
    block: Block,
    cwd: Path,
    env: dict[str, str],
    dsn: str,
    background: list[subprocess.Popen[bytes]],
) -> None:
    if block.file:
        (cwd / block.file).write_text(block.code, encoding="utf-8")
    elif block.option == "background":
        assert block.lang == "sh", block
        log = open(cwd / f"background-{len(background)}.log", "wb")  # noqa: SIM115
        background.append(
            subprocess.Popen(
                ["bash", "-c", block.code],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    elif block.lang == "python":
        done = subprocess.run(
            [sys.executable, "-"],
            input=block.code.encode(),
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=90,
        )
        assert done.returncode == 0, (
            f"{block} exited {done.returncode}:\n{done.stdout.decode()}\n{done.stderr.decode()}"
            + logs_of(cwd)
        )
    elif block.lang == "sql":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(block.code)
    else:
        raise AssertionError(f"{block}: no runner for {block.lang!r} blocks")


def logs_of(cwd: Path) -> str:
    return "".join(
        f"\n--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(cwd.glob("background-*.log"))
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
