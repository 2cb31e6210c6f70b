"""For the accounts API tests: the simulator reachable from serve, members made in any store (SQLite or
PostgreSQL), a GET that does not follow redirects, and the OAuth "browser" steps."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from cosmogen.domain.roles import Role
from cosmogen.identity import tokens, users
from cosmogen.store import Database
from cosmogen.store.tables import workspaces
from cosmogen.testing.simulator import Simulator
from tests.integration.api.helpers import call

CLIENT_ID = "studio-app"


def open_store(data_dir: Path, database_url: str | None) -> Database:
    return Database.open(url=database_url) if database_url else Database.open(data_dir=data_dir)


def member(
    data_dir: Path, database_url: str | None, email: str, role: Role, workspace: str = "default"
) -> tuple[str, str]:
    """A member of `workspace` with `role` and an API token: (user id, token)."""
    db = open_store(data_dir, database_url)
    try:
        with db.engine.begin() as conn:
            if conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace)).first() is None:
                # A PostgreSQL store emptied by clean_pg_url lost the "default" row migration 0011 made.
                conn.execute(workspaces.insert().values(id=workspace, name=workspace.title()))
            user_id = users.create_user(email, email.split("@")[0])(conn)
            users.add_member(workspace, user_id, role)(conn)
            secret, write = tokens.create_token(user_id=user_id, workspace_id=workspace, name="t", role=role)
            write(conn)
    finally:
        db.close()
    return user_id, secret.reveal()


class _NoFollow(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Seen:
    """Every status line, header and body a person's browser or client was shown."""

    texts: list[str] = field(default_factory=list)

    def add(self, *items: Any) -> None:
        self.texts.extend(i if isinstance(i, str) else json.dumps(i, default=str) for i in items)


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def get(
    url: str, *, token: str | None = None, accept: str | None = None, cookie: str | None = None
) -> tuple[int, dict[str, str], str]:
    """A GET that shows redirects instead of following them: (status, headers, body). `cookie`: a
    session cookie value, sent as a browser would."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if cookie:
        headers["Cookie"] = f"__Host-cosmogen_session={cookie}"
    if accept:
        headers["Accept"] = accept
    opener = urllib.request.build_opener(_NoFollow)
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (test servers on loopback)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, _lower(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers), error.read().decode()


def register(sim: Simulator, url: str, client_secret: str, providers: tuple[str, ...] = ("slack",)) -> None:
    sim.oauth.register_client(CLIENT_ID, client_secret, [f"{url}/oauth/callback/{p}" for p in providers])


def start(
    url: str, token: str, sim: Simulator, client_secret: str, *, name: str = "team", provider: str = "slack",
    return_to: str | None = "/studio/accounts", seen: Seen | None = None, issuer: bool = True,
) -> dict[str, Any]:  # fmt: skip
    oauth: dict[str, Any] = {
        "authorize_url": f"{sim.url}/oauth/authorize",
        "token_url": f"{sim.url}/oauth/token",
        "revoke_url": f"{sim.url}/oauth/revoke",
    }
    if issuer:
        oauth["issuer"] = sim.url
    body = {
        "name": name, "provider": provider, "client_id": CLIENT_ID, "client_secret": client_secret,
        "settings": {"oauth": oauth}, "base_url": sim.url, "return_to": return_to,
    }  # fmt: skip
    status, headers, started = call(url + "/api/v1/accounts/oauth/start", "POST", token=token, body=body)
    if seen is not None:
        seen.add(str(status), headers, started)
    assert status == 201, started
    return dict(started)


def authorize(authorization_url: str, seen: Seen | None = None) -> str:
    """The person approves at the simulator; returns where it redirects the browser (our callback)."""
    status, headers, body = get(authorization_url)
    if seen is not None:
        seen.add(authorization_url, str(status), headers, body)
    assert status in (302, 303), (status, body)
    return headers["location"]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
