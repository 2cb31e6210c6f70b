"""Sign-in: `POST /api/v1/session` (login), `GET` (the current session), `DELETE` (logout).

Login answers the same bytes for an unknown email and a wrong password (and a disabled user): the
password is verified against a dummy hash when there is no user, so it costs the same time. Throttled
per account name and per client address (identity/throttle.py): a throttled attempt answers 429 with
Retry-After and is not checked at all. Every attempt is logged with its outcome, never the password.
A success sets a new session cookie (the one sent along, if any, is ended: rotation at login) and
returns the CSRF token for unsafe requests. `PUT /api/v1/password` changes the password (the current one
is needed, and counts towards the throttle) and ends every session of the user but the new one.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, select

from cosmogen.api import links
from cosmogen.api.problems import AUTHENTICATED, Problem, problem_responses
from cosmogen.api.schemas import new_password
from cosmogen.api.security import Authenticator, Principal, principal
from cosmogen.identity import sessions, throttle
from cosmogen.identity.passwords import PasswordRejected, check_policy
from cosmogen.identity.users import IdentityError, normalise_email
from cosmogen.store.tables import memberships, users

router = APIRouter(prefix="/api/v1", tags=["identity"])
log = logging.getLogger("cosmogen.identity.login")

LOGIN_FAILED = Problem(
    401, "login_failed", "the email or the password is wrong", hint="check both and try again"
)


class Login(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "owner@example.com", "password": "correct horse battery staple"}]
        }
    )


class SessionInfo(BaseModel):
    user_id: str
    workspace_id: str
    role: str
    csrf_token: str
    expires_at: datetime


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def set_session_cookie(response: Response, value: str, auth: Authenticator) -> None:
    # __Host-: Secure, Path=/, no Domain. SameSite=Strict: never sent on a cross-site request
    # (docs/security.md says why Strict, not Lax, and how the OAuth callback copes).
    response.set_cookie(sessions.COOKIE_NAME, value, max_age=int(auth.sessions.absolute.total_seconds()),
                        path="/", secure=True, httponly=True, samesite="strict")  # fmt: skip


async def open_session(
    request: Request, response: Response, auth: Authenticator, user_id: str, workspace_id: str, role: str
) -> SessionInfo:
    """A new session for the user (ending the one the browser sent, if any), its cookie set."""
    now = auth.now()
    old = request.cookies.get(sessions.COOKIE_NAME)
    value, write = sessions.start_session(user_id, workspace_id, now, auth.sessions, replaces=old)
    await request.app.state.runtime.writer.write(write)
    set_session_cookie(response, value.reveal(), auth)
    return SessionInfo(user_id=user_id, workspace_id=workspace_id, role=role,
                       csrf_token=sessions.csrf_token(value.reveal()),
                       expires_at=now + auth.sessions.absolute)  # fmt: skip


def _account(request: Request, email: str) -> Any:
    with request.app.state.runtime.db.engine.connect() as conn:
        return conn.execute(
            select(users.c.id, users.c.password_hash, users.c.disabled_at, memberships.c.workspace_id,
                   memberships.c.role)
            .outerjoin(memberships, memberships.c.user_id == users.c.id)
            .where(users.c.email == email)
            .order_by((memberships.c.workspace_id != "default"), memberships.c.created_at)
        ).first()  # fmt: skip


def _wait_seconds(runtime: Any, keys: list[str], now: datetime) -> int:
    """Whole seconds these throttle keys must still wait (0: go on)."""
    with runtime.db.engine.connect() as conn:
        wait = throttle.wait_for(conn, keys, now)
    return max(1, math.ceil(wait.total_seconds())) if wait.total_seconds() > 0 else 0


def _too_many(seconds: int) -> Problem:
    return Problem(429, "too_many_attempts", "too many failed sign-ins; wait before trying again",
                   hint=f"try again in {seconds} seconds", headers={"Retry-After": str(seconds)})  # fmt: skip


@router.post(
    "/session",
    response_model=SessionInfo,
    summary="Sign in with email and password",
    responses={**problem_responses(400, 401, 403, 422, 429), **links.answer(200, links.member("/user_id"))},
)
async def login(body: Login, request: Request, response: Response) -> SessionInfo:
    auth: Authenticator = request.app.state.auth
    runtime = request.app.state.runtime
    address = client_address(request)
    try:
        email = normalise_email(body.email)
    except IdentityError:
        email = body.email.strip().lower()[:254]
    keys = [throttle.account_key(email), throttle.ip_key(address)]
    now = auth.now()
    seconds = _wait_seconds(runtime, keys, now)
    if seconds:
        log.warning("login throttled for %s from %s (retry in %d s)", email, address, seconds)
        raise _too_many(seconds)
    found = await asyncio.to_thread(_account, request, email)
    stored = found.password_hash if found is not None else None
    matches = await asyncio.to_thread(auth.passwords.verify, stored, body.password)
    usable = found is not None and found.disabled_at is None and found.workspace_id is not None
    if not (matches and usable):
        await runtime.writer.write(throttle.record_failure(auth.throttle, keys[0], keys[1], now))
        log.warning("login failed for %s from %s", email, address)
        raise LOGIN_FAILED
    await runtime.writer.write(throttle.record_success(keys[0]))
    if stored is not None and auth.passwords.needs_rehash(stored):
        upgraded = await asyncio.to_thread(auth.passwords.hash, body.password)
        await runtime.writer.write(sessions.set_password_hash(found.id, upgraded, now))
    log.warning("login succeeded for %s from %s", email, address)
    return await open_session(request, response, auth, found.id, found.workspace_id, found.role)


@router.get(
    "/session",
    response_model=SessionInfo,
    summary="The current browser session",
    responses={**problem_responses(401, 404, 429), **links.answer(200, links.member("/user_id"))},
)
async def current(request: Request, caller: Annotated[Principal, Depends(principal)]) -> SessionInfo:
    cookie = request.cookies.get(sessions.COOKIE_NAME)
    if caller.via != "session" or not cookie:
        raise Problem(404, "not_found", "this credential is not a browser session",
                      hint="API tokens have no session; see GET /api/v1/me")  # fmt: skip
    auth: Authenticator = request.app.state.auth
    with request.app.state.runtime.db.engine.connect() as conn:
        found = sessions.identify_session(conn, cookie, auth.now(), auth.sessions)
    if found is None:  # ended between the two reads
        raise Problem(401, "unauthenticated", "the session ended; sign in again")
    return SessionInfo(user_id=caller.user_id, workspace_id=caller.workspace_id, role=caller.role.value,
                       csrf_token=sessions.csrf_token(cookie), expires_at=found.expires_at)  # fmt: skip


@router.delete(
    "/session",
    status_code=204,
    summary="Sign out: the session ends now",
    responses=problem_responses(401, 403, 429),
)
async def logout(request: Request, caller: Annotated[Principal, Depends(principal)]) -> Response:
    auth: Authenticator = request.app.state.auth
    cookie = request.cookies.get(sessions.COOKIE_NAME)
    if caller.via == "session" and cookie:
        await request.app.state.runtime.writer.write(sessions.end_session(cookie, auth.now()))
    response = Response(status_code=204)
    response.delete_cookie(sessions.COOKIE_NAME, path="/", secure=True, httponly=True, samesite="strict")
    return response


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = new_password()


@router.put(
    "/password",
    response_model=SessionInfo,
    summary="Change your password (signed-in browser)",
    responses=problem_responses(*AUTHENTICATED, 400),
)
async def change_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    caller: Annotated[Principal, Depends(principal)],
) -> SessionInfo:
    """Needs the current password; ends every session of the user and signs this browser in anew."""
    auth: Authenticator = request.app.state.auth
    runtime = request.app.state.runtime
    if caller.via != "session":
        detail = "a password is changed from a signed-in browser, not with an API token"
        raise Problem(403, "forbidden", detail, hint="sign in at the studio and change it there")
    with runtime.db.engine.connect() as conn:
        row = conn.execute(
            select(users.c.email, users.c.password_hash).where(users.c.id == caller.user_id)
        ).one()
    keys = [throttle.account_key(row.email), throttle.ip_key(client_address(request))]
    now = auth.now()
    seconds = _wait_seconds(runtime, keys, now)
    if seconds:
        raise _too_many(seconds)
    if not await asyncio.to_thread(auth.passwords.verify, row.password_hash, body.current_password):
        await runtime.writer.write(throttle.record_failure(auth.throttle, keys[0], keys[1], now))
        log.warning("password change refused for %s: wrong current password", row.email)
        raise Problem(
            403, "wrong_password", "the current password is wrong", hint="type your current password"
        )
    try:
        check_policy(body.new_password, email=row.email)
    except PasswordRejected as exc:
        raise Problem(422, "invalid", str(exc), hint="choose another password") from None
    hashed = await asyncio.to_thread(auth.passwords.hash, body.new_password)

    def write(conn: Connection) -> None:
        sessions.set_password_hash(caller.user_id, hashed, now)(conn)
        sessions.end_user_sessions(conn, caller.user_id, now)

    await runtime.writer.write(write)
    log.warning("password changed for %s; all their sessions ended", row.email)
    return await open_session(request, response, auth, caller.user_id, caller.workspace_id, caller.role.value)
