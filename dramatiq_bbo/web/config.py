"""What the web page was configured with, and the two things every handler reads from it:
the database a request names and the settings themselves (``app.state.bbo_web``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import UnknownDatabase

#: ``authorize(request, action, target)``: ``action`` is ``pause``, ``resume``, ``cancel``,
#: ``retry``, ``finalize``, ``set``, ``disable`` or ``enable``; ``target`` the operation id as
#: text (the class name for ``disable``/``enable``). True or a non-empty text (who asks,
#: recorded as ``by``) allows it; False or None refuses it (403). May be a coroutine function.
Authorize = Callable[[Request, str, str | None], bool | str | None | Awaitable[bool | str | None]]


@dataclass(frozen=True)
class WebSettings:
    """What :func:`~dramatiq_bbo.web.create_app` was given, for the handlers."""

    authorize: Authorize | None
    databases: tuple[str, ...] | None
    title: str
    secret: bytes
    refresh_seconds: float
    page_size: int
    templates: Jinja2Templates

    def database_names(self) -> tuple[str, ...]:
        """The databases offered: those given, else every registered one."""
        if self.databases is not None:
            return self.databases
        names = REGISTRY.names()
        first = [DEFAULT_DATABASE] if DEFAULT_DATABASE in names else []
        return tuple(first + [n for n in names if n != DEFAULT_DATABASE]) or (DEFAULT_DATABASE,)


def settings_of(request: Request) -> WebSettings:
    settings: WebSettings = request.app.state.bbo_web
    return settings


def database_of(request: Request, given: str | None) -> str:
    """The database a request names (``?database=`` or a form field), the first offered when
    it names none; UnknownDatabase when it names one the page does not offer."""
    names = settings_of(request).database_names()
    if given is None or not given.strip():
        return names[0]
    if given.strip() not in names:
        raise UnknownDatabase(f"database {given.strip()!r} is not one this page shows")
    return given.strip()
