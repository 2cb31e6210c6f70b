"""Two ASGI layers every HTTP request passes: security headers on every response, and CSRF checks.

Headers (API-12): a CSP that forbids plugins, <base> and framing; nosniff; no referrer; HSTS when the
request came over TLS (scope scheme "https": directly, or from a trusted proxy's X-Forwarded-Proto, which
uvicorn honours only from the addresses in FORWARDED_ALLOW_IPS, 127.0.0.1 by default); no-store on the
API (credentials and sessions pass there); TRACE refused. There is no CORS layer: no origin but our own
can read an answer.

CSRF (API-07): an unsafe request (not GET/HEAD/OPTIONS) that carries the session cookie and no
Authorization header must come from our own origin (`Origin` equal to the request's scheme and host) AND
carry `X-CSRF-Token` equal to the token bound to that session (identity/sessions.csrf_token; the login
answer hands it over; signing in itself needs only the Origin). Any unsafe request whose `Origin` names
another site is refused too, with or without a cookie (login CSRF). Refusals are a 403 problem, before
any route runs. The webhook ingress (/hooks/) is exempt: its callers are other servers, authenticated by
the path token and HMAC.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cosmogen.api.problems import problem_response
from cosmogen.identity.sessions import COOKIE_NAME, csrf_token

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Signing in starts a new session, so the one whose token the page may hold can be stale or dead.
SIGN_IN = frozenset({("POST", "/api/v1/session"), ("POST", "/api/v1/setup"), ("POST", "/api/v1/invite")})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HSTS = "max-age=31536000; includeSubDomains"
_ALWAYS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"
        api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in _ALWAYS if k not in present)
                if tls:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                if api:
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        if scope["method"] == "TRACE":
            refused = problem_response(405, "method_not_allowed", "TRACE is not served",
                                       headers={"Allow": "GET, HEAD, POST, PUT, PATCH, DELETE"})  # fmt: skip
            await refused(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _session_cookie(headers: dict[str, str]) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


def own_origin(scope: Scope, headers: dict[str, str]) -> str:
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"


class CsrfGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope["path"].startswith("/hooks/"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get("origin")
        refusal = None
        if origin is not None and origin != own_origin(scope, headers):
            refusal = "the request comes from another site"
        elif "authorization" not in headers:
            cookie = _session_cookie(headers)
            if cookie is not None:
                if origin is None:
                    refusal = "a signed-in browser request must say where it comes from (Origin)"
                elif (scope["method"], scope["path"]) in SIGN_IN:
                    pass  # a stale cookie has no token the page could know; the Origin check stands
                elif not hmac.compare_digest(headers.get("x-csrf-token", ""), csrf_token(cookie)):
                    refusal = "the X-CSRF-Token header is missing or does not match the session"
        if refusal is not None:
            hint = "send unsafe requests from the studio itself, with the X-CSRF-Token the sign-in returned"
            await problem_response(403, "csrf", refusal, hint=hint)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: Any) -> None:
    """Outermost first: the headers wrap every answer, the CSRF refusals included."""
    app.add_middleware(CsrfGuard)
    app.add_middleware(SecurityHeaders)


__all__ = ["CsrfGuard", "SecurityHeaders", "install", "own_origin"]
