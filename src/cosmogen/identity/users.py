"""Users, workspaces and memberships as stored. Passwords and sessions live beside (identity/)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from cosmogen.domain.roles import Role
from cosmogen.store.tables import memberships, new_id, users, utcnow, workspaces
from cosmogen.store.writer import WriteFn


class IdentityError(ValueError):
    """A user or membership that cannot be made; the message says why."""


def normalise_email(email: str) -> str:
    cleaned = email.strip().lower()
    if "@" not in cleaned or len(cleaned) > 254 or any(ch.isspace() for ch in cleaned):
        raise IdentityError(f"{email!r} is not an email address")
    return cleaned


def create_user(email: str, display_name: str, password_hash: str | None = None) -> WriteFn[str]:
    address = normalise_email(email)
    user_id = new_id()

    def write(conn: Connection) -> str:
        taken = conn.execute(select(users.c.id).where(users.c.email == address)).first()
        if taken is not None:
            raise IdentityError(f"a user with the email {address} already exists")
        conn.execute(
            users.insert().values(
                id=user_id, email=address, display_name=display_name.strip() or address,
                password_hash=password_hash,
            )
        )  # fmt: skip
        return user_id

    return write


def create_workspace(name: str, workspace_id: str | None = None) -> WriteFn[str]:
    new = workspace_id or new_id()

    def write(conn: Connection) -> str:
        conn.execute(workspaces.insert().values(id=new, name=name, created_at=utcnow()))
        return new

    return write


def add_member(workspace_id: str, user_id: str, role: Role) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        conn.execute(
            memberships.insert().values(
                workspace_id=workspace_id, user_id=user_id, role=role.value, created_at=utcnow()
            )
        )

    return write


def role_in(conn: Connection, workspace_id: str, user_id: str) -> Role | None:
    found = conn.execute(
        select(memberships.c.role).where(
            memberships.c.workspace_id == workspace_id, memberships.c.user_id == user_id
        )
    ).scalar_one_or_none()
    return None if found is None else Role(found)
