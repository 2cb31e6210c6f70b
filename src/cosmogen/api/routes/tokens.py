"""`/api/v1/tokens`: API tokens for the CLI and automation.

Anyone in a workspace may make tokens for themselves, with at most their own role (a token never acts
above its user's current role either: identity/tokens.identify). The value is in the create answer only;
the store keeps its sha256. Lists show your own tokens, or every token of the workspace to an admin;
revoking works on your own or, for an admin, any token of the workspace. Another workspace's tokens
answer 404.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy import select

from cosmogen.api import links
from cosmogen.api.problems import AUTHENTICATED, Problem, problem_responses
from cosmogen.api.schemas import json_integer
from cosmogen.api.security import Authenticator, Principal, principal
from cosmogen.domain.roles import Role
from cosmogen.identity.tokens import create_token, revoke_token
from cosmogen.store.tables import api_tokens

router = APIRouter(prefix="/api/v1", tags=["identity"], responses=problem_responses(*AUTHENTICATED))


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=3650), BeforeValidator(json_integer)] | None = None


class TokenInfo(BaseModel):
    id: str
    name: str
    prefix: str
    role: str
    user_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class CreatedToken(TokenInfo):
    token: str  # shown here once; never again


def _info(row: object) -> TokenInfo:
    return TokenInfo.model_validate(row, from_attributes=True)


@router.post(
    "/tokens",
    response_model=CreatedToken,
    status_code=201,
    summary="Make an API token (shown once)",
    responses={**problem_responses(400), **links.answer(201, links.token("/id"))},
)
async def create(
    body: NewToken, request: Request, caller: Annotated[Principal, Depends(principal)]
) -> CreatedToken:
    auth: Authenticator = request.app.state.auth
    role = body.role or caller.role
    if not caller.role.allows(role):
        raise Problem(403, "forbidden", f"a token cannot have more than your role ({caller.role.value})",
                      hint="ask for a lower role")  # fmt: skip
    now = auth.now()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    secret, write = create_token(user_id=caller.user_id, workspace_id=caller.workspace_id,
                                 name=body.name.strip(), role=role, expires_at=expires)  # fmt: skip
    token_id = await request.app.state.runtime.writer.write(write)
    with request.app.state.runtime.db.engine.connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).one()
    return CreatedToken(**_info(row).model_dump(), token=secret.reveal())


@router.get(
    "/tokens",
    response_model=list[TokenInfo],
    summary="Your API tokens (an admin: the workspace's)",
    responses=links.answer(200, links.token("/0/id")),
)
async def list_tokens(request: Request, caller: Annotated[Principal, Depends(principal)]) -> list[TokenInfo]:
    query = select(api_tokens).where(api_tokens.c.workspace_id == caller.workspace_id)
    if not caller.role.allows(Role.ADMIN):
        query = query.where(api_tokens.c.user_id == caller.user_id)
    with request.app.state.runtime.db.engine.connect() as conn:
        rows = conn.execute(query.order_by(api_tokens.c.created_at, api_tokens.c.id)).all()
    return [_info(r) for r in rows]


@router.delete(
    "/tokens/{token_id}", status_code=204, summary="Revoke an API token", responses=problem_responses(404)
)
async def revoke(
    token_id: str, request: Request, caller: Annotated[Principal, Depends(principal)]
) -> Response:
    with request.app.state.runtime.db.engine.connect() as conn:
        row = conn.execute(
            select(api_tokens.c.user_id)
            .where(api_tokens.c.id == token_id, api_tokens.c.workspace_id == caller.workspace_id)
        ).one_or_none()  # fmt: skip
    # Someone else's token is as invisible to a non-admin as another workspace's.
    if row is None or (row.user_id != caller.user_id and not caller.role.allows(Role.ADMIN)):
        raise Problem(
            404, "not_found", "no such token in this workspace", hint="list them: GET /api/v1/tokens"
        )
    auth: Authenticator = request.app.state.auth
    await request.app.state.runtime.writer.write(revoke_token(token_id, auth.now()))
    return Response(status_code=204)
