"""``create_app()``: the operators' web page as an ASGI application (Starlette + Jinja2).

An application mounts it under its own routing and authentication
(``Mount("/bbo", app=create_app(authorize=...))``) or ``dramatiq-bbo web`` serves it alone.
It reads through the databases registered with :func:`dramatiq_bbo.configure`; it is
read-only unless the application passes ``authorize(request, action, target)``, which says
whether this request may run this action (and may name who asks). The pages are listed once
in :data:`dramatiq_bbo.web.pages.PAGES`: the routes and the navigation bar are built from it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..errors import ConfigurationError
from . import actions, pages, rendering
from .config import Authorize, WebSettings
from .listing import PAGE_SIZE

TEMPLATES = Path(__file__).parent / "templates"


def create_app(
    *,
    authorize: Authorize | None = None,
    databases: Sequence[str] | None = None,
    title: str = "dramatiq-bbo",
    secret: bytes | str | None = None,
    refresh_seconds: float = 5.0,
    page_size: int = PAGE_SIZE,
) -> Starlette:
    """The web page's ASGI application.

    ``authorize``: see :data:`Authorize`; without it every action is refused (403).
    ``databases``: the names (as registered with ``configure(databases=...)``) the pages
    offer, the first being the default; None: every registered database. ``secret`` signs
    the CSRF tokens (random per process when None: tokens expire on restart; give one when
    several processes serve the page). ``refresh_seconds``: how often a page showing a
    queued or active operation reloads itself. ConfigurationError for a bad value."""
    settings = WebSettings(
        authorize=_checked_authorize(authorize),
        databases=_checked_databases(databases),
        title=_checked_title(title),
        secret=_checked_secret(secret),
        refresh_seconds=_checked_number("refresh_seconds", refresh_seconds, 0.5, 3_600),
        page_size=int(_checked_number("page_size", page_size, 1, 1_000, whole=True)),
        templates=Jinja2Templates(env=_environment()),
    )
    routes = [Route(p.path, p.endpoint, name=p.name, methods=["GET"]) for p in pages.PAGES]
    routes += actions.routes()
    app = Starlette(routes=routes, exception_handlers=rendering.EXCEPTION_HANDLERS)
    app.state.bbo_web = settings
    return app


def _environment() -> jinja2.Environment:
    """Jinja2 with autoescaping on for every template: class names, arguments, reasons and
    exception messages come from users."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["nav"] = [(p.name, p.label) for p in pages.PAGES if p.label]
    environment.filters.update(rendering.FILTERS)
    return environment


def _checked_authorize(value: Any) -> Authorize | None:
    if value is not None and not callable(value):
        raise ConfigurationError(f"authorize must be callable or None, got {value!r}")
    return value  # type: ignore[no-any-return]


def _checked_databases(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(value) if not isinstance(value, str) else (value,)
    if not names or not all(isinstance(n, str) and 1 <= len(n) <= 63 for n in names):
        raise ConfigurationError(
            f"databases must be a non-empty list of database names, got {value!r}"
        )
    return names


def _checked_title(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 200:
        raise ConfigurationError(f"title must be text of 1..200 characters, got {value!r}")
    return value.strip()


def _checked_secret(value: Any) -> bytes:
    if value is None:
        return secrets.token_bytes(32)
    raw = value.encode() if isinstance(value, str) else value
    if not isinstance(raw, bytes) or len(raw) < 16:
        raise ConfigurationError("secret must be text or bytes of at least 16 bytes")
    return raw


def _checked_number(name: str, value: Any, low: float, high: float, whole: bool = False) -> float:
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)
