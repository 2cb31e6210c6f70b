"""The owner's one-time setup: no default password, no anonymous mode.

While the store has no user, every `cosmogen serve` start issues a fresh setup token (256 bits; its
sha256 is stored; the unused ones from earlier starts are removed) and prints the link. Completing the
setup with it makes the first user, admin of the "default" workspace, and uses the token up; from then
on setup is gone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import Connection, delete, exists, select, update

from cosmogen.domain.roles import Role
from cosmogen.identity.users import add_member, create_user, create_workspace
from cosmogen.integrations.secret import Secret
from cosmogen.store.tables import new_id, setup_tokens, users, workspaces
from cosmogen.store.writer import WriteFn

DEFAULT_WORKSPACE = "default"


class SetupRefused(ValueError):
    """The setup cannot be completed: `done` says whether an owner already exists."""

    def __init__(self, message: str, *, done: bool) -> None:
        super().__init__(message)
        self.done = done


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def has_users(conn: Connection) -> bool:
    return bool(conn.execute(select(exists().where(users.c.id.is_not(None)))).scalar())


def issue_setup_token(now: datetime) -> tuple[Secret, WriteFn[bool]]:
    """A new setup token and the write that stores it (True), or stores nothing when a user exists."""
    token = Secret(secrets.token_urlsafe(32))

    def write(conn: Connection) -> bool:
        if has_users(conn):
            conn.execute(delete(setup_tokens))
            return False
        conn.execute(delete(setup_tokens).where(setup_tokens.c.used_at.is_(None)))
        conn.execute(
            setup_tokens.insert().values(id=new_id(), token_hash=_hash(token.reveal()), created_at=now)
        )
        return True

    return token, write


def complete_setup(
    token: str, *, email: str, display_name: str, password_hash: str, now: datetime
) -> WriteFn[str]:
    """Use the token up and make the owner; returns the new user's id. Raises SetupRefused."""
    presented = _hash(token)

    def write(conn: Connection) -> str:
        if has_users(conn):
            raise SetupRefused("the owner already exists; sign in instead", done=True)
        rows = conn.execute(select(setup_tokens.c.id, setup_tokens.c.token_hash)
                            .where(setup_tokens.c.used_at.is_(None))).all()  # fmt: skip
        match = next((r.id for r in rows if hmac.compare_digest(r.token_hash, presented)), None)
        if match is None:
            raise SetupRefused("the setup token is not valid (it may be from an earlier start)", done=False)
        used = conn.execute(
            update(setup_tokens).where(setup_tokens.c.id == match, setup_tokens.c.used_at.is_(None))
            .values(used_at=now)
        )  # fmt: skip
        if used.rowcount != 1:
            raise SetupRefused("the setup token was used already", done=True)
        user_id = create_user(email, display_name, password_hash)(conn)
        # Migration 0011 makes "default"; a store emptied by hand (or by tests) may have lost it.
        if conn.execute(select(workspaces.c.id).where(workspaces.c.id == DEFAULT_WORKSPACE)).first() is None:
            create_workspace("Default", DEFAULT_WORKSPACE)(conn)
        add_member(DEFAULT_WORKSPACE, user_id, Role.ADMIN)(conn)
        return user_id

    return write
