"""Rendering a page: the context every template shares, the cell formats, and error pages.

Cells are formatted as the command line formats them (:mod:`dramatiq_bbo.operate.render`:
``42.0%``, ``1h 05m``, times in UTC), so a number reads the same on every surface. Errors
become a page with a status code and one line saying why (never a traceback, never a DSN):
a malformed value 400, an unknown operation or database 404, a refused transition 409, the
database unreachable 503 (its error, which may name the host, goes to the log only).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    BBOError,
    ConnectionFailed,
    InvalidTransition,
    OperationNotFound,
    UnknownDatabase,
    ValidationError,
)
from ..logs import event
from ..operate import render
from ..operate.summaries import json_safe
from . import csrf
from .config import settings_of

#: logged when a page fails on a database error (its text and class; the page says less)
WEB_DATABASE_ERROR = "background_operation_web_database_error"


#: what a page says after an action sent the browser back to it (``?done=<action>``); any
#: other value says nothing, so a link cannot make the page say something of its choosing
NOTICES = {
    "pause": "Paused: its running job stops at its next checkpoint.",
    "resume": "Resumed.",
    "cancel": "Cancelled: its running job stops at its next checkpoint.",
    "retry": "Retried: its failed jobs are queued again.",
    "finalize": "Finalizing: the rest of the operation runs in the web server's process.",
    "set": "Sizes changed: they apply from its next job.",
    "disable": "Class disabled: its jobs stop within one sub-batch.",
    "enable": "Class enabled: its operations run again.",
}


def _cursor(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join("NULL" if v is None else str(v) for v in value) or "-"
    return "-" if value is None else str(value)


FILTERS = {
    "text": lambda value: render.text(json_safe(value)),
    "duration": lambda v: render.duration(v.total_seconds() if hasattr(v, "total_seconds") else v),
    "percent": render.percent,
    "cursor": _cursor,
}


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    database: str | None = None,
    refresh: bool = False,
    status_code: int = 200,
) -> Response:
    """``template`` rendered with the shared context, and the CSRF cookie set."""
    settings = settings_of(request)
    token = csrf.token_for(request, settings.secret)
    shared = {
        "request": request,
        "title": settings.title,
        "database": database,
        "databases": settings.database_names(),
        "csrf_field": csrf.FIELD,
        "csrf_token": token,
        "can_act": settings.authorize is not None,
        "refresh_seconds": settings.refresh_seconds if refresh else None,
        "notice": NOTICES.get(request.query_params.get("done") or ""),
    }
    response = settings.templates.TemplateResponse(
        request, template, {**shared, **context}, status_code=status_code
    )
    csrf.set_cookie(request, response, token)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def error_page(request: Request, status_code: int, message: str) -> Response:
    return page(
        request, "error.html", {"status_code": status_code, "message": message},
        status_code=status_code,
    )  # fmt: skip


def status_of(exc: BBOError) -> int:
    if isinstance(exc, OperationNotFound | UnknownDatabase) and not isinstance(
        exc, ValidationError
    ):
        return 404
    if isinstance(exc, InvalidTransition):
        return 409
    return 400


async def _bbo_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BBOError)
    if isinstance(exc, ConnectionFailed):  # its text may name the host: the log only
        return await _database_error(request, exc)
    return error_page(request, status_of(exc), " ".join(str(exc).split()))


async def _database_error(request: Request, exc: Exception) -> Response:
    event(
        WEB_DATABASE_ERROR,
        level=logging.ERROR,
        path=request.url.path,
        error_class=type(exc).__name__,
        error=" ".join(str(exc).split()),
    )
    return error_page(request, 503, "the database could not be read; see the logs")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_page(request, exc.status_code, str(exc.detail))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    BBOError: _bbo_error,
    psycopg.Error: _database_error,
    HTTPException: _http_error,
}
