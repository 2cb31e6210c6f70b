"""The audit log for routes: `record(conn, principal, action, object, details)` in the route's own
transaction, and `GET /api/v1/audit` (admins; newest first, paged with `before`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import Connection, and_, or_, select

from cosmogen.api.problems import AUTHENTICATED, Problem, problem_responses
from cosmogen.api.security import Principal, require
from cosmogen.domain.roles import Role
from cosmogen.store.audit import write_audit
from cosmogen.store.tables import audit_log

router = APIRouter(prefix="/api/v1", tags=["audit"])


def record(
    conn: Connection,
    principal: Principal,
    action: str,
    obj: tuple[str, str | None],
    details: Mapping[str, Any] | None = None,
) -> str:
    """One audit entry by `principal` about `obj` = (type, id); `details` without secrets."""
    object_type, object_id = obj
    return write_audit(
        conn,
        workspace_id=principal.workspace_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        details=details,
        actor_user_id=principal.user_id,
        actor_credential_id=principal.credential_id,
    )


class AuditEntry(BaseModel):
    id: str
    at: datetime
    actor_user_id: str | None
    action: str
    object_type: str
    object_id: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before: str | None  # pass as `before` for the next (older) page; null: no more


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="The audit log, newest first (admins)",
    responses=problem_responses(*AUTHENTICATED, 400),
)
async def list_audit(
    request: Request,
    caller: Annotated[Principal, Depends(require(Role.ADMIN))],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    db = request.app.state.runtime.db

    def read() -> AuditPage:
        c = audit_log.c
        query = select(audit_log).where(c.workspace_id == caller.workspace_id)
        with db.engine.connect() as conn:
            if before is not None:
                anchor = conn.execute(
                    select(c.at, c.id).where(c.workspace_id == caller.workspace_id, c.id == before)
                ).one_or_none()
                if anchor is None:
                    raise Problem(
                        400,
                        "bad_cursor",
                        "`before` names no audit entry",
                        hint="use the `next_before` of the previous page",
                    )
                query = query.where(or_(c.at < anchor.at, and_(c.at == anchor.at, c.id < anchor.id)))
            if action is not None:
                query = query.where(c.action == action)
            if object_id is not None:
                query = query.where(c.object_id == object_id)
            rows = conn.execute(query.order_by(c.at.desc(), c.id.desc()).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        entries = [
            AuditEntry(
                id=r.id,
                at=r.at,
                actor_user_id=r.actor_user_id,
                action=r.action,
                object_type=r.object_type,
                object_id=r.object_id,
                details=dict(r.details or {}),
            )
            for r in rows
        ]
        return AuditPage(entries=entries, next_before=rows[-1].id if more and rows else None)

    return await asyncio.to_thread(read)
