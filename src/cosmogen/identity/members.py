"""Members of a workspace: invite (a one-time link for a new user to set a password), change a role,
remove. A workspace always keeps at least one admin. Removing a member ends their sessions in that
workspace and revokes their tokens there (identify already refuses both once the membership is gone).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, select, update

from cosmogen.domain.roles import Role
from cosmogen.identity.users import add_member, create_user, normalise_email, role_in
from cosmogen.integrations.secret import Secret
from cosmogen.store.tables import api_tokens, invites, memberships, new_id, sessions, users
from cosmogen.store.writer import WriteFn

INVITE_LIFETIME = timedelta(days=7)


class MemberError(ValueError):
    """A membership change that cannot be made; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Added:
    user_id: str
    invite: Secret | None  # a new user gets a link to set their password; an existing one does not


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add(workspace_id: str, email: str, display_name: str, role: Role, now: datetime) -> WriteFn[Added]:
    address = normalise_email(email)
    token = Secret(secrets.token_urlsafe(32))

    def write(conn: Connection) -> Added:
        user_id = conn.execute(select(users.c.id).where(users.c.email == address)).scalar_one_or_none()
        invite: Secret | None = None
        if user_id is None:
            user_id = create_user(address, display_name)(conn)
            conn.execute(invites.insert().values(
                id=new_id(), token_hash=_hash(token.reveal()), user_id=user_id, workspace_id=workspace_id,
                created_at=now, expires_at=now + INVITE_LIFETIME))  # fmt: skip
            invite = token
        elif role_in(conn, workspace_id, user_id) is not None:
            raise MemberError(409, "already_member", f"{address} is already a member of this workspace")
        add_member(workspace_id, user_id, role)(conn)
        return Added(user_id, invite)

    return write


def accept(token: str, password_hash: str, now: datetime) -> WriteFn[tuple[str, str, Role]]:
    """Use an invite: sets the new user's password; returns (user id, workspace id, role)."""
    presented = _hash(token)

    def write(conn: Connection) -> tuple[str, str, Role]:
        row = conn.execute(
            select(invites.c.id, invites.c.user_id, invites.c.workspace_id, invites.c.expires_at)
            .where(invites.c.token_hash == presented, invites.c.used_at.is_(None))
        ).one_or_none()  # fmt: skip
        if row is None or row.expires_at <= now:
            raise MemberError(
                403, "invite_invalid", "this invite link is not valid (used, expired or unknown)"
            )
        role = role_in(conn, row.workspace_id, row.user_id)
        if role is None:
            raise MemberError(403, "invite_invalid", "this invite link is not valid (the member was removed)")
        conn.execute(update(invites).where(invites.c.id == row.id).values(used_at=now))
        conn.execute(update(users).where(users.c.id == row.user_id, users.c.password_hash.is_(None))
                     .values(password_hash=password_hash, updated_at=now))  # fmt: skip
        return row.user_id, row.workspace_id, role

    return write


def _admins(conn: Connection, workspace_id: str) -> int:
    admins = (memberships.c.workspace_id == workspace_id) & (memberships.c.role == Role.ADMIN.value)
    return int(conn.execute(select(func.count()).select_from(memberships).where(admins)).scalar_one())


def change_role(workspace_id: str, user_id: str, role: Role) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        current = role_in(conn, workspace_id, user_id)
        if current is None:
            raise MemberError(404, "not_found", "no such member in this workspace")
        if current is Role.ADMIN and role is not Role.ADMIN and _admins(conn, workspace_id) <= 1:
            raise MemberError(409, "last_admin", "the workspace needs at least one admin; make another first")
        member = (memberships.c.workspace_id == workspace_id) & (memberships.c.user_id == user_id)
        conn.execute(update(memberships).where(member).values(role=role.value))

    return write


def remove(workspace_id: str, user_id: str, now: datetime) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        current = role_in(conn, workspace_id, user_id)
        if current is None:
            raise MemberError(404, "not_found", "no such member in this workspace")
        if current is Role.ADMIN and _admins(conn, workspace_id) <= 1:
            raise MemberError(409, "last_admin", "the workspace needs at least one admin; make another first")
        member = (memberships.c.workspace_id == workspace_id) & (memberships.c.user_id == user_id)
        conn.execute(delete(memberships).where(member))
        live = (sessions.c.workspace_id == workspace_id) & (sessions.c.user_id == user_id)
        conn.execute(update(sessions).where(live, sessions.c.revoked_at.is_(None)).values(revoked_at=now))
        held = (api_tokens.c.workspace_id == workspace_id) & (api_tokens.c.user_id == user_id)
        conn.execute(update(api_tokens).where(held, api_tokens.c.revoked_at.is_(None)).values(revoked_at=now))

    return write
