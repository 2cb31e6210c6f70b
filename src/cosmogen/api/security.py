"""Who is calling, and may they: the one place every route's authentication goes through.

`principal` is a FastAPI dependency: an `Authorization: Bearer cg_...` API token (identity/tokens.py),
or the `__Host-cosmogen_session` cookie of a signed-in browser (identity/sessions.py). A request with an
Authorization header is judged by it alone (never by a cookie beside it). No credential, a bad one, an
expired or revoked one: 401, the same answer for each. Cookie-authenticated unsafe requests also pass
the CSRF check (api/middleware.py) before they get here. `require(role)` also checks the caller's role
in its workspace (403).
Objects of another workspace are looked up with the principal's workspace id, so they answer 404.
Each workspace's authenticated requests are rate limited (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from cosmogen.api.problems import Problem
from cosmogen.domain.login_throttle import ThrottlePolicy
from cosmogen.domain.request_rate import Buckets, RatePolicy
from cosmogen.domain.roles import Role
from cosmogen.identity.passwords import Passwords
from cosmogen.identity.sessions import COOKIE_NAME, TOUCH_EVERY, SessionPolicy, identify_session, touch
from cosmogen.identity.tokens import identify
from cosmogen.store import Database
from cosmogen.store.writer import WriteFn

UNAUTHENTICATED = Problem(
    401,
    "unauthenticated",
    "sign in, or send an API token as `Authorization: Bearer cg_...`",
    headers={"WWW-Authenticate": 'Bearer realm="cosmogen"'},
)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    workspace_id: str
    role: Role
    via: Literal["token", "session"]
    credential_id: str  # the token's or the session's id (for audit and revocation)


class Authenticator:
    """Turns a request's credential into a Principal. Built once by the composition root; it also holds
    the sign-in settings the session routes use (password hashing, timeouts, throttling)."""

    def __init__(
        self,
        db: Database,
        now: Callable[[], datetime],
        *,
        sessions: SessionPolicy | None = None,
        throttle: ThrottlePolicy | None = None,
        passwords: Passwords | None = None,
    ) -> None:
        self._db = db
        self._now = now
        self.sessions = sessions or SessionPolicy()
        self.throttle = throttle or ThrottlePolicy()
        self.passwords = passwords or Passwords()

    def now(self) -> datetime:
        return self._now()

    def authenticate(self, request: Request) -> Principal | None:
        found, _ = self.identify(request)
        return found

    def identify(self, request: Request) -> tuple[Principal | None, WriteFn[None] | None]:
        """The caller, and a write to run for it (a session's idle clock, moved at most once a minute)."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None, None
            with self._db.engine.connect() as conn:
                found = identify(conn, token.strip(), self._now())
            if found is None:
                return None, None
            return Principal(found.user_id, found.workspace_id, found.role, "token", found.token_id), None
        cookie = request.cookies.get(COOKIE_NAME)
        if not cookie:
            return None, None
        now = self._now()
        with self._db.engine.connect() as conn:
            session = identify_session(conn, cookie, now, self.sessions)
        if session is None:
            return None, None
        caller = Principal(session.user_id, session.workspace_id, session.role, "session", session.session_id)
        stale = now - session.last_seen_at >= TOUCH_EVERY
        return caller, touch(session.session_id, now) if stale else None


# How /openapi.json names the two credentials (either will do). They only describe: `Authenticator`
# reads the request itself, and auto_error is off so a missing one is our 401 problem, not FastAPI's 403.
BEARER = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer cg_...`")
COOKIE = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    description="a signed-in browser; unsafe requests also need `Origin` and `X-CSRF-Token`",
)


async def principal(
    request: Request,
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    _session: Annotated[str | None, Security(COOKIE)],
) -> Principal:
    """The route dependency (its parameters put both credentials in /openapi.json)."""
    return await caller_of(request)


async def caller_of(request: Request) -> Principal:
    """The caller of `request`, or 401; for the rare route that needs a credential only sometimes."""
    auth: Authenticator = request.app.state.auth
    found, then = await asyncio.to_thread(auth.identify, request)
    if found is None:
        raise UNAUTHENTICATED
    _within_rate(request, found.workspace_id)
    if then is not None:
        await request.app.state.runtime.writer.write(then)
    return found


def _within_rate(request: Request, workspace_id: str) -> None:
    """Each workspace's requests share one bucket (domain/request_rate.py), per server process."""
    buckets: Buckets | None = getattr(request.app.state, "request_rate", None)
    if buckets is None:  # `cosmogen serve` sets its configured one; anything else gets the default
        buckets = request.app.state.request_rate = Buckets(RatePolicy())
    wait = buckets.take(workspace_id, time.monotonic())
    if wait:
        raise Problem(429, "rate_limited", "this workspace is making requests faster than its limit",
                      hint=f"wait {wait} s and slow down", headers={"Retry-After": str(wait)})  # fmt: skip


def require(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, if its role in its workspace is at least `role`; else 403."""

    async def check(found: Annotated[Principal, Depends(principal)]) -> Principal:
        if not found.role.allows(role):
            detail = f"this needs the {role.value} role in the workspace; you have {found.role.value}"
            raise Problem(403, "forbidden", detail, hint="ask a workspace admin to change your role")
        return found

    return check


# The caller with at least this role, as route parameters: `def route(caller: Editor) -> ...`.
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Editor = Annotated[Principal, Depends(require(Role.EDITOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
