"""Workspaces, members and tokens made straight in a served store, SQLite (data dir) or PostgreSQL (URL)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cosmogen.domain.roles import Role
from cosmogen.identity import tokens, users
from cosmogen.store import Database, metadata
from cosmogen.store.tables import workspaces


def open_store(where: Path | str) -> Database:
    return Database.open(data_dir=where) if isinstance(where, Path) else Database.open(url=where)


def new_workspace(where: Path | str, name: str) -> str:
    db = open_store(where)
    try:
        with db.engine.begin() as conn:
            return users.create_workspace(name)(conn)
    finally:
        db.close()


def member(where: Path | str, email: str, role: Role, workspace: str = "default") -> tuple[str, str]:
    """A user with `role` in `workspace` and an API token of theirs: (user id, token)."""
    db = open_store(where)
    try:
        with db.engine.begin() as conn:
            if conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace)).first() is None:
                users.create_workspace(workspace, workspace)(conn)  # a truncated PostgreSQL store lost it
            user_id = users.create_user(email, email.split("@")[0])(conn)
            users.add_member(workspace, user_id, role)(conn)
            secret, write = tokens.create_token(
                user_id=user_id, workspace_id=workspace, name="test", role=role
            )
            write(conn)
    finally:
        db.close()
    return user_id, secret.reveal()


# Tables that change on their own while a server runs (heartbeats, the idempotency purge, job queue).
_NOISY = frozenset({"rate_limits", "audit_log", "sessions", "login_attempts", "api_tokens"})


def table_digest(where: Path | str, skip: frozenset[str] = _NOISY) -> dict[str, str]:
    """sha256 of every application table's rows (sorted), to prove a request changed nothing."""
    db = open_store(where)
    out: dict[str, str] = {}
    try:
        with db.engine.connect() as conn:
            for table in metadata.sorted_tables:
                if table.name in skip:
                    continue
                rows = [_plain(r._asdict()) for r in conn.execute(select(table))]
                rows.sort(key=lambda r: json.dumps(r, sort_keys=True, default=str))
                out[table.name] = hashlib.sha256(
                    json.dumps(rows, sort_keys=True, default=str).encode()
                ).hexdigest()
    finally:
        db.close()
    return out


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes(v).hex() if isinstance(v, bytes | bytearray | memoryview) else v for k, v in row.items()}
