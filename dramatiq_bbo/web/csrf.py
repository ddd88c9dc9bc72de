"""Cross-site request forgery protection: a signed double-submit token.

Every page sets a cookie holding a token — a random nonce and its HMAC under the
application's secret — and writes the same token into each of its forms. A POST is accepted
only when the form's token equals the cookie's and the signature holds. Another site can make
a browser send the cookie, but cannot read it, so cannot put it in the form; and it cannot
forge a token of its own (a cookie planted by a sibling subdomain) without the secret. A POST
whose ``Origin`` header names another host is refused too, before anything else is read.

No session store and no dependency: the secret is given to :func:`~dramatiq_bbo.web.create_app`
(or drawn at random per process, so tokens expire when the process restarts).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

#: the cookie and the form field holding the token
COOKIE = "bbo_csrf"
FIELD = "csrf_token"
#: how long a token's cookie lives (seconds): a page left open for a night still works
MAX_AGE = 7 * 24 * 3600


def new_token(secret: bytes) -> str:
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_sign(secret, nonce)}"


def valid_token(secret: bytes, token: str | None) -> bool:
    """True if ``token`` was signed with ``secret``."""
    if not token or token.count(".") != 1:
        return False
    nonce, signature = token.split(".")
    return hmac.compare_digest(signature, _sign(secret, nonce))


def token_for(request: Request, secret: bytes) -> str:
    """The token of this browser: its cookie's when valid, else a new one (set by
    :func:`set_cookie` on the response)."""
    current = request.cookies.get(COOKIE)
    return current if current is not None and valid_token(secret, current) else new_token(secret)


def set_cookie(request: Request, response: Response, token: str) -> None:
    """Send the token's cookie unless the browser has it: HttpOnly, SameSite=Strict, scoped to
    the path the application is mounted under, Secure when the page came over HTTPS."""
    if request.cookies.get(COOKIE) == token:
        return
    response.set_cookie(
        COOKIE,
        token,
        max_age=MAX_AGE,
        path=request.scope.get("root_path") or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def accepted(request: Request, secret: bytes, submitted: str | None) -> bool:
    """True if this POST carries the browser's own signed token and comes from this site."""
    if not _same_origin(request):
        return False
    cookie = request.cookies.get(COOKIE)
    if not cookie or not submitted or not valid_token(secret, cookie):
        return False
    return hmac.compare_digest(cookie, submitted)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", request.url.netloc)


def _sign(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()
