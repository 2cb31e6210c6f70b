"""API tokens: for the CLI and automation. Shown once when made; only their sha256 is stored.

A token reads `cg_<43 base64url characters>` (256 bits from `secrets`), so a leaked one is easy to spot
(and to scan for). Lookup is by hash, so there is no comparison to time. A token acts as its user in one
workspace with at most its own role and at most the user's current role there; a revoked or expired
token, a disabled user or a removed membership stops it at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from cosmogen.domain.roles import Role, weaker
from cosmogen.integrations.secret import Secret
from cosmogen.store.tables import api_tokens, memberships, new_id, users
from cosmogen.store.writer import WriteFn

TOKEN_PREFIX = "cg_"  # noqa: S105 - the visible marker of our tokens, not a secret
_SHOWN_PREFIX_CHARS = 8


def mint() -> Secret:
    return Secret(TOKEN_PREFIX + secrets.token_urlsafe(32))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    token_id: str
    user_id: str
    workspace_id: str
    role: Role


def create_token(
    *, user_id: str, workspace_id: str, name: str, role: Role, expires_at: datetime | None = None
) -> tuple[Secret, WriteFn[str]]:
    """A new token (to show once) and the write that stores its hash; the write returns its id."""
    token = mint()
    token_id = new_id()
    row = {
        "id": token_id,
        "workspace_id": workspace_id,
        "user_id": user_id,
        "name": name,
        "token_hash": token_hash(token.reveal()),
        "prefix": token.reveal()[: len(TOKEN_PREFIX) + _SHOWN_PREFIX_CHARS],
        "role": role.value,
        "expires_at": expires_at,
    }

    def write(conn: Connection) -> str:
        conn.execute(api_tokens.insert().values(**row))
        return token_id

    return token, write


def identify(conn: Connection, token: str, now: datetime) -> TokenIdentity | None:
    """The identity a presented token carries, or None (unknown, revoked, expired, disabled user, no
    longer a member). The caller answers None with one generic 401."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = conn.execute(
        select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.workspace_id, api_tokens.c.role,
               api_tokens.c.expires_at, memberships.c.role.label("member_role"))
        .join(users, users.c.id == api_tokens.c.user_id)
        .join(memberships, (memberships.c.user_id == api_tokens.c.user_id)
              & (memberships.c.workspace_id == api_tokens.c.workspace_id))
        .where(api_tokens.c.token_hash == token_hash(token), api_tokens.c.revoked_at.is_(None),
               users.c.disabled_at.is_(None))
    ).one_or_none()  # fmt: skip
    if row is None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return TokenIdentity(row.id, row.user_id, row.workspace_id, weaker(Role(row.role), Role(row.member_role)))


def revoke_token(token_id: str, now: datetime) -> WriteFn[bool]:
    def write(conn: Connection) -> bool:
        done = conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(done.rowcount)

    return write
