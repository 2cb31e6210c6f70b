"""Talking to a served cosmogen over real HTTP, and making users and tokens straight in its store."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cosmogen.domain.roles import Role
from cosmogen.identity import tokens, users
from cosmogen.store import Database


def call(
    url: str, method: str = "GET", *, token: str | None = None, body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """One request; returns (status, headers, JSON body or text)."""
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)  # noqa: S310 (our server)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, got, raw = error.code, dict(error.headers), error.read()
    try:
        return status, got, json.loads(raw) if raw else None
    except ValueError:
        return status, got, raw.decode(errors="replace")


def member_with_token(
    data_dir: Path, email: str, role: Role, *, token_role: Role | None = None, workspace: str = "default"
) -> tuple[str, str]:
    """A user who is a member of `workspace` with `role`, and an API token of theirs: (user id, token)."""
    db = Database.open(data_dir=data_dir)
    try:
        with db.engine.begin() as conn:
            user_id = users.create_user(email, email.split("@")[0])(conn)
            users.add_member(workspace, user_id, role)(conn)
            secret, write = tokens.create_token(
                user_id=user_id, workspace_id=workspace, name="test", role=token_role or role
            )
            write(conn)
    finally:
        db.close()
    return user_id, secret.reveal()
