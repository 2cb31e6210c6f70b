"""Members over real HTTP against `cosmogen serve`: an admin invites a new user (a one-time link token,
shown once, stored hashed), who sets a password through it and is signed in with the role given; an
existing user is added without a link; roles change; removal stops that member's sessions and tokens in
the workspace at once; the last admin cannot be demoted or removed; non-admins cannot manage members;
another workspace's members answer 404."""

from __future__ import annotations

from pathlib import Path

from cosmogen.domain.roles import Role
from cosmogen.identity import users
from cosmogen.store import Database
from tests.integration.api.helpers import call, member_with_token
from tests.integration.api.sessions_support import create_owner, login, session_cookie
from tests.integration.conftest import serving


def test_invite_roles_removal_and_the_last_admin(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        owner = create_owner(url, tmp_path / "serve.log")
        status, _, invited = owner.call(
            "/api/v1/members", "POST", body={"email": "Neo@Example.com", "role": "editor"}
        )
        assert status == 201 and invited["role"] == "editor" and len(invited["invite_token"]) >= 43
        # The invited user has no password yet: signing in fails until the link is used.
        assert (
            call(url + "/api/v1/session", "POST", body={"email": "neo@example.com", "password": "x" * 12})[0]
            == 401
        )
        accept = {"token": invited["invite_token"], "password": "follow the white rabbit"}
        assert call(url + "/api/v1/invite", "POST", body={**accept, "password": "password1"})[0] == 422
        status, headers, body = call(url + "/api/v1/invite", "POST", body=accept)
        assert status == 200 and body["role"] == "editor" and session_cookie(headers)[0]
        assert call(url + "/api/v1/invite", "POST", body=accept)[0] == 403  # single use
        neo = login(url, "neo@example.com", "follow the white rabbit")
        assert neo.call("/api/v1/me")[2]["role"] == "editor"
        # A non-admin cannot manage members, but can list them.
        assert (
            neo.call("/api/v1/members", "POST", body={"email": "x@example.com", "role": "viewer"})[0] == 403
        )
        listed = neo.call("/api/v1/members")[2]
        assert {(m["email"], m["role"]) for m in listed} == {
            ("owner@example.com", "admin"),
            ("neo@example.com", "editor"),
        }
        owner_id = next(m["user_id"] for m in listed if m["role"] == "admin")
        # The last admin stays.
        assert (
            owner.call(f"/api/v1/members/{owner_id}", "PATCH", body={"role": "viewer"})[2]["code"]
            == "last_admin"
        )
        assert owner.call(f"/api/v1/members/{owner_id}", "DELETE")[0] == 409
        status, _, changed = owner.call(
            f"/api/v1/members/{invited['user_id']}", "PATCH", body={"role": "viewer"}
        )
        assert status == 200 and changed["role"] == "viewer" and neo.call("/api/v1/me")[2]["role"] == "viewer"
        # An existing user of another workspace is added without a link.
        db = Database.open(data_dir=data)
        try:
            with db.engine.begin() as conn:
                users.create_workspace("Other", "other")(conn)
        finally:
            db.close()
        _, stranger = member_with_token(data, "trin@example.com", Role.ADMIN, workspace="other")
        assert call(url + f"/api/v1/members/{invited['user_id']}", "DELETE", token=stranger)[0] == 404
        assert (
            call(url + f"/api/v1/members/{owner_id}", "PATCH", token=stranger, body={"role": "viewer"})[0]
            == 404
        )
        assert {m["email"] for m in call(url + "/api/v1/members", token=stranger)[2]} == {"trin@example.com"}
        status, _, added = owner.call(
            "/api/v1/members", "POST", body={"email": "trin@example.com", "role": "viewer"}
        )
        assert status == 201 and added["invite_token"] is None
        assert (
            owner.call("/api/v1/members", "POST", body={"email": "trin@example.com", "role": "viewer"})[0]
            == 409
        )
        # Removal: the member's session and tokens in this workspace stop at once.
        status, _, made = neo.call("/api/v1/tokens", "POST", body={"name": "neo"})
        assert status == 201 and call(url + "/api/v1/me", token=made["token"])[0] == 200
        assert owner.call(f"/api/v1/members/{invited['user_id']}", "DELETE")[0] == 204
        assert neo.call("/api/v1/me")[0] == 401 and call(url + "/api/v1/me", token=made["token"])[0] == 401
        assert owner.call(f"/api/v1/members/{invited['user_id']}", "DELETE")[0] == 404
    assert invited["invite_token"] not in (tmp_path / "serve.log").read_text()
