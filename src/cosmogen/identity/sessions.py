"""Browser sessions: the id is the cookie value (256 bits from `secrets`), stored as its sha256 only.

A new id at every login (the one the browser held before is ended: no fixation). A session ends when
it is idle longer than `idle`, older than `absolute`, logged out, or its user is disabled (that ends all
of the user's sessions at once). The CSRF token is derived from the session id, so it is bound to it and
needs no storage; only someone holding the cookie can compute it, and a cross-site page cannot read
either.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update

from cosmogen.domain.roles import Role
from cosmogen.integrations.secret import Secret
from cosmogen.store.tables import memberships, new_id, sessions, users
from cosmogen.store.writer import WriteFn

COOKIE_NAME = "__Host-cosmogen_session"
CSRF_HEADER = "X-CSRF-Token"
# A touch is written at most this often: the idle timeout does not need per-request precision.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta = timedelta(hours=12)
    absolute: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class SessionIdentity:
    session_id: str
    user_id: str
    workspace_id: str
    role: Role
    last_seen_at: datetime
    expires_at: datetime


def session_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def csrf_token(cookie_value: str) -> str:
    return hashlib.sha256(b"cosmogen-csrf\x00" + cookie_value.encode("utf-8")).hexdigest()


def start_session(
    user_id: str, workspace_id: str, now: datetime, policy: SessionPolicy, *, replaces: str | None = None
) -> tuple[Secret, WriteFn[str]]:
    """A new session id (for the cookie) and the write that stores it; the write returns the row id.
    `replaces`: the cookie the browser held before, ended in the same transaction."""
    value = Secret(secrets.token_urlsafe(32))
    row_id = new_id()
    row = {
        "id": row_id,
        "session_hash": session_hash(value.reveal()),
        "user_id": user_id,
        "workspace_id": workspace_id,
        "created_at": now,
        "last_seen_at": now,
        "expires_at": now + policy.absolute,
    }

    def write(conn: Connection) -> str:
        if replaces:
            _end(conn, session_hash(replaces), now)
        conn.execute(sessions.insert().values(**row))
        return row_id

    return value, write


def identify_session(
    conn: Connection, cookie_value: str, now: datetime, policy: SessionPolicy
) -> SessionIdentity | None:
    """The identity a presented session cookie carries, or None (unknown, ended, idle, too old, disabled
    user, no longer a member)."""
    if not cookie_value or len(cookie_value) > 128:
        return None
    row = conn.execute(
        select(sessions.c.id, sessions.c.user_id, sessions.c.workspace_id, sessions.c.last_seen_at,
               sessions.c.expires_at, memberships.c.role)
        .join(users, users.c.id == sessions.c.user_id)
        .join(memberships, (memberships.c.user_id == sessions.c.user_id)
              & (memberships.c.workspace_id == sessions.c.workspace_id))
        .where(sessions.c.session_hash == session_hash(cookie_value), sessions.c.revoked_at.is_(None),
               users.c.disabled_at.is_(None))
    ).one_or_none()  # fmt: skip
    if row is None or row.expires_at <= now or row.last_seen_at + policy.idle <= now:
        return None
    return SessionIdentity(row.id, row.user_id, row.workspace_id, Role(row.role), row.last_seen_at,
                           row.expires_at)  # fmt: skip


def touch(session_id: str, now: datetime) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.last_seen_at < now)
            .values(last_seen_at=now)
        )

    return write


def _end(conn: Connection, hashed: str, now: datetime) -> bool:
    done = conn.execute(
        update(sessions)
        .where(sessions.c.session_hash == hashed, sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(done.rowcount)


def end_session(cookie_value: str, now: datetime) -> WriteFn[bool]:
    def write(conn: Connection) -> bool:
        return _end(conn, session_hash(cookie_value), now)

    return write


def end_user_sessions(conn: Connection, user_id: str, now: datetime) -> int:
    done = conn.execute(
        update(sessions)
        .where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(done.rowcount)


def disable_user(user_id: str, now: datetime) -> WriteFn[int]:
    """Disable a user: their sessions end now (tokens stop too: identify checks disabled_at). Returns
    how many sessions were ended."""

    def write(conn: Connection) -> int:
        conn.execute(update(users).where(users.c.id == user_id).values(disabled_at=now, updated_at=now))
        return end_user_sessions(conn, user_id, now)

    return write


def set_password_hash(user_id: str, password_hash: str, now: datetime) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        conn.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash, updated_at=now)
        )

    return write
