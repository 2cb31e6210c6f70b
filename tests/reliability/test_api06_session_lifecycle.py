"""API-06: the session lifecycle.

Over real HTTP against `cosmogen serve`: the cookie is `__Host-`, Secure, HttpOnly, Path=/,
SameSite=Strict (the issue's choice over the matrix's Lax; docs/security.md), carries 256 bits, is stored
only as its sha256, rotates at login (the cookie sent along with a login is dead after it), dies at
logout, and disabling the user ends every session at once; changing the password (current one needed,
policy applied, not with an API token) ends every other session and rotates this one. On a moved clock,
on SQLite and PostgreSQL: the idle timeout (12 h) and the absolute timeout (7 d) end a session exactly at
their edge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.integration.api.helpers import call, member_with_token
from tests.integration.api.sessions_support import (
    COOKIE,
    OWNER,
    create_owner,
    login,
    member_with_password,
    session_cookie,
)
from tests.integration.conftest import serving

from cosmogen.domain.roles import Role
from cosmogen.identity import sessions
from cosmogen.identity.users import add_member, create_user, create_workspace
from cosmogen.store import Database, migrate
from cosmogen.store.tables import sessions as session_rows
from cosmogen.store.tables import workspaces


def test_cookie_rotation_logout_and_disable_over_http(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        first = create_owner(url, tmp_path / "serve.log")
        # Log in again carrying the setup's cookie: a new id, and the old one is dead.
        again = {"Cookie": f"{COOKIE}={first.cookie}", "Origin": url}
        credentials = {"email": OWNER[0], "password": OWNER[1]}
        status, headers, body = call(url + "/api/v1/session", "POST", body=credentials, headers=again)
        assert status == 200, body
        value, raw = session_cookie(headers)
        attributes = {a.strip().split("=")[0].lower(): a.strip() for a in raw.split(";")[1:]}
        assert raw.startswith("__Host-cosmogen_session=")
        assert {"secure", "httponly", "path", "samesite", "max-age"} <= set(attributes)
        assert attributes["path"] == "Path=/" and attributes["samesite"].lower() == "samesite=strict"
        assert "domain" not in attributes
        assert int(attributes["max-age"].split("=")[1]) == 7 * 24 * 3600
        assert len(value) >= 43 and value != first.cookie  # 256 bits, base64url
        assert first.call("/api/v1/me")[0] == 401
        second = login(url, *OWNER)
        assert second.cookie not in (value, first.cookie)
        assert second.call("/api/v1/me")[0] == 200
        # Logout: that cookie is dead at once; the other session lives on.
        assert second.call("/api/v1/session", "DELETE")[0] == 204
        assert second.call("/api/v1/me")[0] == 401
        third_cookie = value
        assert call(url + "/api/v1/me", headers={"Cookie": f"{COOKIE}={third_cookie}"})[0] == 200
        # Disabling a user ends all their sessions.
        member_with_password(data, "eve@example.com", "a long enough passphrase")
        eve_a = login(url, "eve@example.com", "a long enough passphrase")
        eve_b = login(url, "eve@example.com", "a long enough passphrase")
        assert eve_a.call("/api/v1/me")[2]["role"] == "editor"
        db = Database.open(data_dir=data)
        try:
            with db.engine.begin() as conn:
                stored = set(conn.execute(select(session_rows.c.session_hash)).scalars())
                mine = session_rows.c.session_hash == sessions.session_hash(eve_a.cookie)
                eve = conn.execute(select(session_rows.c.user_id).where(mine)).scalar_one()
                ended = sessions.disable_user(eve, datetime.now(UTC))(conn)
        finally:
            db.close()
        assert ended == 2
        assert eve_a.call("/api/v1/me")[0] == 401 and eve_b.call("/api/v1/me")[0] == 401
        eve_login = {"email": "eve@example.com", "password": "a long enough passphrase"}
        status, _, body = call(url + "/api/v1/session", "POST", body=eve_login)
        assert status == 401 and body["code"] == "login_failed"
    # Only hashes are stored.
    assert hashlib.sha256(third_cookie.encode()).hexdigest() in stored
    assert not any(c in stored for c in (first.cookie, third_cookie, eve_a.cookie))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        opened = Database.open(data_dir=tmp_path)
        migrate.upgrade(opened)
    else:
        opened = Database.open(url=request.getfixturevalue("clean_pg_url"))
    try:
        yield opened
    finally:
        opened.close()


def test_idle_and_absolute_timeouts_on_a_moved_clock(db: Database) -> None:
    policy = sessions.SessionPolicy()
    assert (policy.idle, policy.absolute) == (timedelta(hours=12), timedelta(days=7))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with db.engine.begin() as conn:
        if conn.execute(select(workspaces.c.id)).first() is None:  # emptied PostgreSQL: no "default"
            create_workspace("Default", "default")(conn)
        user = create_user("idle@example.com", "idle")(conn)
        add_member("default", user, Role.VIEWER)(conn)
        idle_cookie, write = sessions.start_session(user, "default", start, policy)
        write(conn)
        kept_cookie, write = sessions.start_session(user, "default", start, policy)
        kept = write(conn)

    def alive(cookie: str, at: datetime) -> bool:
        with db.engine.connect() as conn:
            return sessions.identify_session(conn, cookie, at, policy) is not None

    # Idle: unused for 12 h ends it, 1 s earlier it lives.
    assert alive(idle_cookie.reveal(), start + timedelta(hours=12) - timedelta(seconds=1))
    assert not alive(idle_cookie.reveal(), start + timedelta(hours=12))
    # Absolute: used every 11 h it stays alive until exactly 7 days, never after.
    at = start
    while at + timedelta(hours=11) < start + timedelta(days=7):
        at += timedelta(hours=11)
        assert alive(kept_cookie.reveal(), at)
        with db.engine.begin() as conn:
            sessions.touch(kept, at)(conn)
    assert alive(kept_cookie.reveal(), start + timedelta(days=7) - timedelta(seconds=1))
    assert not alive(kept_cookie.reveal(), start + timedelta(days=7))


def test_changing_the_password_ends_every_other_session(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        create_owner(url, tmp_path / "serve.log")
        member_with_password(data, "pat@example.com", "the first passphrase")
        here = login(url, "pat@example.com", "the first passphrase")
        elsewhere = login(url, "pat@example.com", "the first passphrase")
        _, token = member_with_token(data, "bot@example.com", Role.ADMIN)
        change = {"current_password": "the first passphrase", "new_password": "the second passphrase"}
        assert call(url + "/api/v1/password", "PUT", token=token, body=change)[0] == 403  # tokens cannot
        wrong = {**change, "current_password": "not the first one"}
        status, _, body = here.call("/api/v1/password", "PUT", body=wrong)
        assert (status, body["code"]) == (403, "wrong_password")
        status, _, body = here.call("/api/v1/password", "PUT", body={**change, "new_password": "football"})
        assert status == 422 and "common" in body["detail"]
        assert here.call("/api/v1/me")[0] == 200 and elsewhere.call("/api/v1/me")[0] == 200
        status, headers, body = here.call("/api/v1/password", "PUT", body=change)
        assert status == 200, body
        renewed = session_cookie(headers)[0]
        assert here.call("/api/v1/me")[0] == 401 and elsewhere.call("/api/v1/me")[0] == 401
        assert call(url + "/api/v1/me", headers={"Cookie": f"{COOKIE}={renewed}"})[0] == 200
        old = {"email": "pat@example.com", "password": "the first passphrase"}
        assert call(url + "/api/v1/session", "POST", body=old)[0] == 401
        login(url, "pat@example.com", "the second passphrase")
    assert "the second passphrase" not in (tmp_path / "serve.log").read_text()
