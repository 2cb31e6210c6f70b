"""`POST /api/v1/setup`: the owner's one-time setup with the token `cosmogen serve` printed.

Public by necessity (nobody exists yet to sign in). The token is single use and replaced at each start;
once an owner exists this answers 410 whatever is sent.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from cosmogen.api.problems import Problem, problem_responses
from cosmogen.api.routes.session import SessionInfo, client_address, open_session
from cosmogen.api.schemas import new_password
from cosmogen.api.security import Authenticator
from cosmogen.identity.passwords import PasswordRejected, check_policy
from cosmogen.identity.setup import DEFAULT_WORKSPACE, SetupRefused, complete_setup, has_users
from cosmogen.identity.users import IdentityError, normalise_email

router = APIRouter(prefix="/api/v1", tags=["identity"])
log = logging.getLogger("cosmogen.identity.setup")

_GONE = Problem(410, "setup_done", "the owner exists already; setup is closed", hint="sign in instead")


class Setup(BaseModel):
    token: str = Field(max_length=256)
    email: str = Field(max_length=254)
    display_name: str = Field(default="", max_length=200)
    password: str = new_password()


@router.post(
    "/setup",
    response_model=SessionInfo,
    status_code=201,
    summary="Create the owner (once)",
    responses=problem_responses(400, 403, 410, 422),
)
async def setup(body: Setup, request: Request, response: Response) -> SessionInfo:
    auth: Authenticator = request.app.state.auth
    runtime = request.app.state.runtime
    with runtime.db.engine.connect() as conn:
        if has_users(conn):
            raise _GONE
    try:
        email = normalise_email(body.email)
        check_policy(body.password, email=email)
    except (IdentityError, PasswordRejected) as exc:
        detail = str(exc) if isinstance(exc, PasswordRejected) else "the email address is not valid"
        raise Problem(422, "invalid", detail, hint="fix it and send the setup again") from None
    hashed = await asyncio.to_thread(auth.passwords.hash, body.password)
    try:
        user_id = await runtime.writer.write(
            complete_setup(body.token, email=email, display_name=body.display_name, password_hash=hashed,
                           now=auth.now())
        )  # fmt: skip
    except SetupRefused as exc:
        log.warning("setup refused from %s: %s", client_address(request), exc)
        if exc.done:
            raise _GONE from None
        raise Problem(403, "setup_token_invalid", str(exc),
                      hint="use the link the latest `cosmogen serve` start printed") from None  # fmt: skip
    log.warning("setup: owner %s created from %s", email, client_address(request))
    return await open_session(request, response, auth, user_id, DEFAULT_WORKSPACE, "admin")
