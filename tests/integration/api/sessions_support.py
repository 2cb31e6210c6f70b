"""Signing in over real HTTP: the setup link from serve's log, login, and calls with the session cookie.

The cookie is `Secure`, so a client on plain http (a test) sends it back itself, as a browser on
localhost would; unsafe calls carry our Origin and the CSRF token, like the studio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.api.helpers import call

COOKIE = "__Host-cosmogen_session"
OWNER = ("owner@example.com", "correct horse battery staple")


@dataclass(frozen=True)
class Browser:
    url: str
    cookie: str
    csrf: str

    def call(self, path: str, method: str = "GET", *, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        sent = {"Cookie": f"{COOKIE}={self.cookie}", "Origin": self.url, "X-CSRF-Token": self.csrf}
        sent.update(headers or {})
        return call(self.url + path, method, body=body, headers=sent)


def setup_links(log: Path) -> list[str]:
    return re.findall(r"/setup#token=([A-Za-z0-9_-]+)", log.read_text())


def session_cookie(headers: dict[str, str]) -> tuple[str, str]:
    """(cookie value, the whole Set-Cookie header) from an answer that signed in."""
    raw = next(v for k, v in headers.items() if k.lower() == "set-cookie")
    found = re.match(rf"{COOKIE}=([^;]+)", raw)
    assert found is not None, raw
    return found.group(1), raw


def create_owner(url: str, log: Path, email: str = OWNER[0], password: str = OWNER[1]) -> Browser:
    token = setup_links(log)[-1]
    status, headers, body = call(url + "/api/v1/setup", "POST", body={
        "token": token, "email": email, "display_name": "Owner", "password": password})  # fmt: skip
    assert status == 201, body
    return Browser(url, session_cookie(headers)[0], body["csrf_token"])


def login(url: str, email: str, password: str, *, headers: dict[str, str] | None = None) -> Browser:
    status, got, body = call(url + "/api/v1/session", "POST", body={"email": email, "password": password},
                             headers=headers)  # fmt: skip
    assert status == 200, body
    return Browser(url, session_cookie(got)[0], body["csrf_token"])


def member_with_password(data_dir: Path, email: str, password: str, role: str = "editor") -> str:
    """A user of "default" with a password (hashed like the server does), made in the store: its id."""
    from cosmogen.domain.roles import Role
    from cosmogen.identity import users
    from cosmogen.identity.passwords import Passwords
    from cosmogen.store import Database

    db = Database.open(data_dir=data_dir)
    try:
        with db.engine.begin() as conn:
            user_id = users.create_user(email, email.split("@")[0], Passwords().hash(password))(conn)
            users.add_member("default", user_id, Role(role))(conn)
    finally:
        db.close()
    return user_id


def store_fingerprint(data_dir: Path, *, skip: tuple[str, ...] = ("login_throttle",)) -> str:
    """A hash of every row of every table: equal before and after means nothing changed."""
    import hashlib

    from sqlalchemy import select

    from cosmogen.store import Database
    from cosmogen.store.tables import metadata

    digest = hashlib.sha256()
    db = Database.open(data_dir=data_dir)
    try:
        with db.engine.connect() as conn:
            for table in metadata.sorted_tables:
                if table.name in skip:
                    continue
                rows = sorted(repr(tuple(r)) for r in conn.execute(select(table)).all())
                digest.update(f"{table.name}:{rows}".encode())
    finally:
        db.close()
    return digest.hexdigest()


def request_status(url: str, method: str, headers: dict[str, str] | None = None,
                   data: bytes | None = None) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """One request that never waits on an endless body: a stream (SSE) answers with its status and
    headers only; anything else with its JSON (or text) body."""
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=data, headers=headers or {})
        response = conn.getresponse()
        got = {k.lower(): v for k, v in response.getheaders()}
        if method == "HEAD" or "text/event-stream" in got.get("content-type", ""):
            return response.status, got, None
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, got, json.loads(raw) if raw else None
    except ValueError:
        return response.status, got, raw.decode(errors="replace")
