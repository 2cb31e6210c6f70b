"""Who is calling, and may they: the one place every route's authentication goes through.

`principal` is a FastAPI dependency: an `Authorization: Bearer cg_...` API token (identity/tokens.py),
or, once the server's sign-in exists, a session cookie. No credential, a bad one, an expired or revoked
one: 401, the same answer for each. `require(role)` also checks the caller's role in its workspace (403).
Objects of another workspace are looked up with the principal's workspace id, so they answer 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from fastapi import Request

from cosmogen.api.problems import Problem
from cosmogen.domain.roles import Role
from cosmogen.identity.tokens import identify
from cosmogen.store import Database

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
    """Turns a request's credential into a Principal. Built once by the composition root."""

    def __init__(self, db: Database, now: Callable[[], datetime]) -> None:
        self._db = db
        self._now = now

    def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            with self._db.engine.connect() as conn:
                found = identify(conn, token.strip(), self._now())
            if found is None:
                return None
            return Principal(found.user_id, found.workspace_id, found.role, "token", found.token_id)
        return None


async def principal(request: Request) -> Principal:
    auth: Authenticator = request.app.state.auth
    found = await asyncio.to_thread(auth.authenticate, request)
    if found is None:
        raise UNAUTHENTICATED
    return found


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, if its role in its workspace is at least `role`; else 403."""

    async def check(request: Request) -> Principal:
        found = await principal(request)
        if not found.role.allows(role):
            detail = f"this needs the {role.value} role in the workspace; you have {found.role.value}"
            raise Problem(403, "forbidden", detail, hint="ask a workspace admin to change your role")
        return found

    return check
