"""`/api/v1/tokens` over real HTTP against `cosmogen serve`: a token is shown once (only its sha256 is
stored), never above its maker's role; a member lists and revokes only their own, an admin those of the
workspace; another workspace's tokens answer 404; a revoked token stops at once."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import select

from cosmogen.domain.roles import Role
from cosmogen.identity import users
from cosmogen.store import Database
from cosmogen.store.tables import api_tokens
from tests.integration.api.helpers import call, member_with_token
from tests.integration.api.sessions_support import create_owner
from tests.integration.conftest import serving


def test_tokens_lifecycle_roles_and_workspaces(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        owner = create_owner(url, tmp_path / "serve.log")
        status, headers, made = owner.call(
            "/api/v1/tokens", "POST", body={"name": "ci", "expires_in_days": 30}
        )
        assert status == 201 and made["token"].startswith("cg_") and made["role"] == "admin"
        assert headers["cache-control"] == "no-store"
        assert call(url + "/api/v1/me", token=made["token"])[2]["via"] == "token"
        editor_id, editor = member_with_token(data, "ed@example.com", Role.EDITOR)
        status, _, body = call(
            url + "/api/v1/tokens", "POST", token=editor, body={"name": "x", "role": "admin"}
        )
        assert status == 403 and body["code"] == "forbidden"
        status, _, low = call(
            url + "/api/v1/tokens", "POST", token=editor, body={"name": "ro", "role": "viewer"}
        )
        assert status == 201 and low["role"] == "viewer" and low["user_id"] == editor_id
        assert call(url + "/api/v1/me", token=low["token"])[2]["role"] == "viewer"
        # Lists never show a value; a member sees their own, the admin the workspace's.
        mine = call(url + "/api/v1/tokens", token=editor)[2]
        assert {t["user_id"] for t in mine} == {editor_id} and all("token" not in t for t in mine)
        everything = owner.call("/api/v1/tokens")[2]
        assert {t["id"] for t in everything} >= {made["id"], low["id"]} and all(
            "token" not in t for t in everything
        )
        # The editor cannot touch the owner's token (404, as if absent); the admin can revoke the editor's.
        assert call(url + f"/api/v1/tokens/{made['id']}", "DELETE", token=editor)[0] == 404
        assert owner.call(f"/api/v1/tokens/{low['id']}", "DELETE")[0] == 204
        assert call(url + "/api/v1/me", token=low["token"])[0] == 401
        assert owner.call(f"/api/v1/tokens/{low['id']}", "DELETE")[0] == 204  # revoking twice is fine
        # Another workspace: its admin sees none of ours and cannot revoke them.
        db = Database.open(data_dir=data)
        try:
            with db.engine.begin() as conn:
                users.create_workspace("Other", "other")(conn)
            with db.engine.connect() as conn:
                stored = set(conn.execute(select(api_tokens.c.token_hash)).scalars())
        finally:
            db.close()
        _, stranger = member_with_token(data, "st@example.com", Role.ADMIN, workspace="other")
        theirs = call(url + "/api/v1/tokens", token=stranger)[2]
        assert len(theirs) == 1 and theirs[0]["id"] not in {t["id"] for t in everything}
        assert call(url + f"/api/v1/tokens/{made['id']}", "DELETE", token=stranger)[0] == 404
        assert call(url + "/api/v1/me", token=made["token"])[0] == 200
    assert hashlib.sha256(made["token"].encode()).hexdigest() in stored
    assert made["token"] not in stored and made["token"] not in (tmp_path / "serve.log").read_text()
