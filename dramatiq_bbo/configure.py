"""``configure()``: tell dramatiq-bbo which databases to use and which settings to apply.

Call it once at application start (web process and worker processes alike), before
``setup(broker)`` and before any ``enqueue``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .db import DEFAULT_DATABASE, REGISTRY, bind_registry, unbind
from .errors import ConfigurationError
from .pipeline import runtime
from .settings import Settings, check_database


def configure(
    dsn: str | None = None,
    *,
    database: Any = None,
    databases: Mapping[str, str | Any] | None = None,
    **settings: Any,
) -> Settings:
    """Configure the main database (``dsn=`` or an app's peewee ``database=``), optionally more
    named databases (``databases={"ci": "postgresql://..."}``), and setting overrides.

    Calling it again replaces the previous configuration entirely.
    """
    if dsn is None and database is None and not databases:
        raise ConfigurationError("configure() needs dsn=, database= or databases=")
    # Everything is checked before the configuration in force is touched.
    new_settings = Settings().replace(**settings)
    if dsn is not None:
        check_database(DEFAULT_DATABASE, dsn)
    for name, target in (databases or {}).items():
        check_database(name, target if isinstance(target, str) else None)
    REGISTRY.reset()
    REGISTRY.settings = new_settings
    if dsn is not None or database is not None:
        REGISTRY.add(DEFAULT_DATABASE, dsn=dsn, database=database)
    for name, target in (databases or {}).items():
        if isinstance(target, str):
            REGISTRY.add(name, dsn=target)
        else:
            REGISTRY.add(name, database=target)
    bind_registry(REGISTRY)
    return new_settings


def reset() -> None:
    """Forget the configuration (closes connection pools) and the pipeline ``setup`` put in
    force (its broker and middleware). Mostly for tests."""
    REGISTRY.reset()
    runtime.clear()
    unbind()


def settings() -> Settings:
    """The settings in force."""
    return REGISTRY.settings
