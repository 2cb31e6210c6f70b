"""`GET /api/v1/me`: who the credential says the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from cosmogen.api import links
from cosmogen.api.problems import problem_responses
from cosmogen.api.security import Principal, principal

router = APIRouter(prefix="/api/v1", tags=["identity"], responses=problem_responses(401, 429))


class Me(BaseModel):
    user_id: str
    workspace_id: str
    role: str
    via: str


@router.get(
    "/me",
    response_model=Me,
    summary="The caller: user, workspace and role",
    responses=links.answer(200, links.member("/user_id")),
)
async def me(caller: Annotated[Principal, Depends(principal)]) -> Me:
    return Me(
        user_id=caller.user_id, workspace_id=caller.workspace_id, role=caller.role.value, via=caller.via
    )
