"""`GET /api/v1/me`: who the credential says the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from cosmogen.api.security import Principal, principal

router = APIRouter(prefix="/api/v1", tags=["identity"])


class Me(BaseModel):
    user_id: str
    workspace_id: str
    role: str
    via: str


@router.get("/me", response_model=Me, summary="The caller: user, workspace and role")
async def me(caller: Annotated[Principal, Depends(principal)]) -> Me:
    return Me(
        user_id=caller.user_id, workspace_id=caller.workspace_id, role=caller.role.value, via=caller.via
    )
