"""What keeps the web UI's pages safe in a browser: headers, the session cookie, login nonces."""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import SESSION_COOKIE
from dfp.keys.sessions import SessionToken

UI_PREFIX = "/ui"
# Scripts, styles and fonts come from dfp itself; nothing inline runs; no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
LOGIN_COOKIE = "dfp_login"
LOGIN_COOKIE_SECONDS = 600


class PageHeaders:
    """ASGI middleware: the security headers on every response under /ui."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers.setdefault(name, value)
                if "text/html" in headers.get("content-type", ""):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(
    response: Response, request: Request, token: SessionToken, lifetime: int
) -> None:
    """HttpOnly (no script reads it), SameSite=Strict, Secure over https, expiring."""
    response.set_cookie(
        SESSION_COOKIE,
        str(token),
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request)
    )


def session_token(request: Request) -> SessionToken | None:
    return SessionToken.parse(request.cookies.get(SESSION_COOKIE, ""))


def new_login_nonce() -> str:
    return secrets.token_urlsafe(16)


def set_login_nonce(response: Response, request: Request, nonce: str) -> None:
    """The login form's nonce, also in a cookie: a login posted from another site lacks it."""
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_COOKIE_SECONDS,
        path=f"{UI_PREFIX}/login",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def login_nonce_matches(request: Request, presented: str) -> bool:
    expected = request.cookies.get(LOGIN_COOKIE)
    return bool(expected) and bool(presented) and hmac.compare_digest(expected or "", presented)
