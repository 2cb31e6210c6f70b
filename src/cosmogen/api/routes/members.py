"""Members of the caller's workspace: `GET /api/v1/members` (any member), `POST` (admin: add an existing
user, or invite a new one: the answer carries a one-time link token, shown once), `PATCH
/api/v1/members/{user_id}` (admin: change the role), `DELETE` (admin: remove; their sessions and tokens
in this workspace stop). A workspace always keeps an admin. `POST /api/v1/invite` (public: the invited
person has no credential yet) sets the new member's password with the link's token and signs them in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cosmogen.api import links
from cosmogen.api.problems import AUTHENTICATED, Problem, problem_responses
from cosmogen.api.routes.session import SessionInfo, client_address, open_session
from cosmogen.api.schemas import new_password
from cosmogen.api.security import Authenticator, Principal, principal, require
from cosmogen.domain.roles import Role
from cosmogen.identity import members
from cosmogen.identity.passwords import PasswordRejected, check_policy
from cosmogen.identity.users import IdentityError
from cosmogen.store.tables import memberships, users
from cosmogen.store.writer import WriteFn

router = APIRouter(prefix="/api/v1", tags=["identity"])
T = TypeVar("T")
log = logging.getLogger("cosmogen.identity.members")


class Member(BaseModel):
    user_id: str
    email: str
    display_name: str
    role: str
    disabled: bool


class NewMember(BaseModel):
    # What identity/users.normalise_email takes: an @ and no whitespace once the ends are stripped.
    email: str = Field(max_length=254, pattern=r"^\s*\S*@\S*\s*$")
    display_name: str = Field(default="", max_length=200)
    role: Role


class AddedMember(Member):
    invite_token: str | None  # shown once: the new user's link is /invite#token=<this>


class RoleChange(BaseModel):
    role: Role


class InviteAcceptance(BaseModel):
    token: str = Field(max_length=256)
    password: str = new_password()


def _read_members(request: Request, workspace_id: str, user_id: str | None = None) -> list[Member]:
    query = (
        select(users.c.id, users.c.email, users.c.display_name, users.c.disabled_at, memberships.c.role)
        .join(memberships, memberships.c.user_id == users.c.id)
        .where(memberships.c.workspace_id == workspace_id)
        .order_by(users.c.email)
    )
    if user_id is not None:
        query = query.where(users.c.id == user_id)
    with request.app.state.runtime.db.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [Member(user_id=r.id, email=r.email, display_name=r.display_name, role=r.role,
                   disabled=r.disabled_at is not None) for r in rows]  # fmt: skip


async def _write(request: Request, fn: WriteFn[T]) -> T:
    try:
        done: T = await request.app.state.runtime.writer.write(fn)
        return done
    except members.MemberError as exc:
        raise Problem(exc.status, exc.code, str(exc), hint="list the members: GET /api/v1/members") from None


@router.get(
    "/members",
    response_model=list[Member],
    summary="The members of your workspace",
    responses={**problem_responses(401, 429), **links.answer(200, links.member("/0/user_id"))},
)
async def list_members(request: Request, caller: Annotated[Principal, Depends(principal)]) -> list[Member]:
    return _read_members(request, caller.workspace_id)


@router.post(
    "/members",
    response_model=AddedMember,
    status_code=201,
    summary="Add or invite a member",
    responses={
        **problem_responses(*AUTHENTICATED, 400, 409),
        **links.answer(201, links.member("/user_id"), links.invite("/invite_token")),
    },
)
async def add_member(
    body: NewMember, request: Request, caller: Annotated[Principal, Depends(require(Role.ADMIN))]
) -> AddedMember:
    auth: Authenticator = request.app.state.auth
    try:
        write = members.add(caller.workspace_id, body.email, body.display_name, body.role, auth.now())
    except IdentityError:
        raise Problem(
            422, "invalid", "the email address is not valid", hint="fix it and send again"
        ) from None
    added = await _write(request, write)
    member = _read_members(request, caller.workspace_id, added.user_id)[0]
    invite = added.invite.reveal() if added.invite else None
    return AddedMember(**member.model_dump(), invite_token=invite)


@router.patch(
    "/members/{user_id}",
    response_model=Member,
    summary="Change a member's role",
    responses=problem_responses(*AUTHENTICATED, 400, 404, 409),
)
async def change_role(
    user_id: str, body: RoleChange, request: Request,
    caller: Annotated[Principal, Depends(require(Role.ADMIN))],
) -> Member:  # fmt: skip
    await _write(request, members.change_role(caller.workspace_id, user_id, body.role))
    return _read_members(request, caller.workspace_id, user_id)[0]


@router.delete(
    "/members/{user_id}",
    status_code=204,
    summary="Remove a member from the workspace",
    responses=problem_responses(*AUTHENTICATED, 404, 409),
)
async def remove_member(
    user_id: str, request: Request, caller: Annotated[Principal, Depends(require(Role.ADMIN))]
) -> Response:
    auth: Authenticator = request.app.state.auth
    await _write(request, members.remove(caller.workspace_id, user_id, auth.now()))
    return Response(status_code=204)


@router.post(
    "/invite",
    response_model=SessionInfo,
    summary="Accept an invite: set your password",
    responses=problem_responses(400, 403, 422),
)
async def accept_invite(body: InviteAcceptance, request: Request, response: Response) -> SessionInfo:
    auth: Authenticator = request.app.state.auth
    try:
        check_policy(body.password)
    except PasswordRejected as exc:
        raise Problem(422, "invalid", str(exc), hint="choose another password") from None
    hashed = await asyncio.to_thread(auth.passwords.hash, body.password)
    try:
        user_id, workspace_id, role = await request.app.state.runtime.writer.write(
            members.accept(body.token, hashed, auth.now())
        )
    except members.MemberError as exc:
        log.warning("invite refused from %s", client_address(request))
        raise Problem(
            exc.status, exc.code, str(exc), hint="ask an admin of the workspace for a new invite"
        ) from None
    log.warning("invite accepted by user %s from %s", user_id, client_address(request))
    return await open_session(request, response, auth, user_id, workspace_id, role.value)
