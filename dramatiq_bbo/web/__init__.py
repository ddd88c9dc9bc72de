"""The operators' web page: every operation, its progress and failures, and the buttons to
steer it — ``create_app()``, an ASGI application to mount under an application's own routing
and authentication, or ``dramatiq-bbo web`` to serve it alone (see docs/web.md).

Needs the ``web`` extra (``pip install 'dramatiq-bbo[web]'``: Starlette, Jinja2, uvicorn,
python-multipart). Read-only unless given an ``authorize`` hook; POST only, CSRF-protected;
every action goes through the same command layer as the command line and ChatOps.
"""

from __future__ import annotations

from .app import create_app
from .config import Authorize

__all__ = ["Authorize", "create_app"]
