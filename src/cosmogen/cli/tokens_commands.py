"""`cosmogen tokens create|list|revoke`: API tokens for the CLI and automation, made by an operator.

Works on the store directly (like `cosmogen accounts`), next to a running server or not. A new token
is printed once, on standard output, and only its sha256 is stored; lists show a short prefix to tell
tokens apart, never a value.
"""

from __future__ import annotations

import json
from datetime import timedelta

import click
from sqlalchemy import select

from cosmogen.cli.keys_commands import _fail, _open, _store_options
from cosmogen.cli.loading import EXIT_FAILED
from cosmogen.domain.roles import Role, weaker
from cosmogen.identity.tokens import create_token, revoke_token
from cosmogen.identity.users import IdentityError, normalise_email, role_in
from cosmogen.store import Database, migrate
from cosmogen.store.tables import api_tokens, users, utcnow

_ROLES = click.Choice([r.value for r in Role])


def _opened(data_dir: str | None, database_url: str | None) -> Database:
    db, _ = _open(data_dir, database_url)
    migrate.upgrade(db)
    return db


@click.group("tokens")
def tokens_group() -> None:
    """API tokens: make one for a user (shown once), list them, revoke one."""


@tokens_group.command("create")
@_store_options
@click.option("--email", required=True, help="The user the token acts as.")
@click.option("--name", required=True, help="What the token is for (shown in lists).")
@click.option("--role", type=_ROLES, default=None, help="At most the user's role (default: the user's role).")
@click.option("--workspace", default="default", show_default=True, help="The workspace the token acts in.")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None, help="Expire after N days.")
def create_command(
    data_dir: str | None, database_url: str | None, email: str, name: str, role: str | None,
    workspace: str, expires_days: int | None,
) -> None:  # fmt: skip
    """Make a token and print it once (store it now: it cannot be shown again)."""
    db = _opened(data_dir, database_url)
    try:
        try:
            address = normalise_email(email)
        except IdentityError as exc:
            _fail(f"{exc}; give the user's email address")
        with db.engine.begin() as conn:
            user_id = conn.execute(select(users.c.id).where(users.c.email == address)).scalar_one_or_none()
            if user_id is None:
                _fail(f"no user with the email {address}; the owner is made by `cosmogen serve`'s setup link")
            member = role_in(conn, workspace, user_id)
            if member is None:
                _fail(f"{address} is not a member of the workspace {workspace!r}")
            wanted = Role(role) if role else member
            if weaker(wanted, member) != wanted:
                _fail(f"{address} is {member.value} in {workspace!r}; a token cannot have more (use --role)")
            expires = utcnow() + timedelta(days=expires_days) if expires_days else None
            secret, write = create_token(user_id=user_id, workspace_id=workspace, name=name, role=wanted,
                                         expires_at=expires)  # fmt: skip
            token_id = write(conn)
    finally:
        db.close()
    click.echo(f"token {token_id} for {address} ({wanted.value} in {workspace}); shown once:", err=True)
    click.echo(secret.reveal())


@tokens_group.command("list")
@_store_options
@click.option("--email", default=None, help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def list_command(data_dir: str | None, database_url: str | None, email: str | None, as_json: bool) -> None:
    """Every token (or one user's): id, name, prefix, role, state. Never a token's value."""
    db = _opened(data_dir, database_url)
    try:
        query = (
            select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.prefix, api_tokens.c.role,
                   api_tokens.c.workspace_id, users.c.email, api_tokens.c.created_at, api_tokens.c.expires_at,
                   api_tokens.c.revoked_at)
            .join(users, users.c.id == api_tokens.c.user_id)
            .order_by(api_tokens.c.created_at, api_tokens.c.id)
        )  # fmt: skip
        if email:
            query = query.where(users.c.email == email.strip().lower())
        with db.engine.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        db.close()
    now = utcnow()
    listed = [
        {
            "id": r.id, "name": r.name, "prefix": r.prefix, "role": r.role, "workspace": r.workspace_id,
            "email": r.email, "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "state": "revoked" if r.revoked_at else "expired" if r.expires_at and r.expires_at <= now
            else "active",
        }
        for r in rows
    ]  # fmt: skip
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        click.echo("no tokens")
    for t in listed:
        click.echo(f"{t['id']}  {t['prefix']}…  {t['state']:<7}  {t['role']:<6}  {t['email']}  {t['name']}")


@tokens_group.command("revoke")
@_store_options
@click.argument("token_id")
def revoke_command(data_dir: str | None, database_url: str | None, token_id: str) -> None:
    """Revoke a token by its id (from `cosmogen tokens list`); it stops working at once."""
    db = _opened(data_dir, database_url)
    try:
        with db.engine.begin() as conn:
            known = conn.execute(select(api_tokens.c.id).where(api_tokens.c.id == token_id)).first()
            if known is None:
                _fail(f"no token with the id {token_id}; see `cosmogen tokens list`", EXIT_FAILED)
            done = revoke_token(token_id, utcnow())(conn)
    finally:
        db.close()
    click.echo(f"token {token_id} revoked" if done else f"token {token_id} was already revoked")
