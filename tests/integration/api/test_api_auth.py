"""The API's front door over real HTTP: health is public, everything under /api needs a credential, an
API token says who and with which role (never above the user's role in the workspace), and every error
is a problem document. `cosmogen serve` in its own process; tokens made in its store."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from cosmogen.domain.roles import Role
from cosmogen.identity.tokens import revoke_token
from cosmogen.store import Database
from cosmogen.store.tables import api_tokens, utcnow
from tests.integration.api.helpers import call, member_with_token

Served = tuple[str, subprocess.Popen[str]]


def test_health_is_public_and_the_api_is_not(served: Served, tmp_path: Path) -> None:
    url, _ = served
    assert call(url + "/healthz")[0] == 200
    status, _, ready = call(url + "/readyz")
    assert (status, ready) == (200, {"status": "ready"})
    status, headers, body = call(url + "/api/v1/me")
    assert status == 401
    assert headers["content-type"] == "application/problem+json"
    assert headers["www-authenticate"].startswith("Bearer")
    assert body["code"] == "unauthenticated" and "API token" in body["detail"]
    for bogus in ("cg_not-a-real-token", "Bearer", "x" * 500):
        assert call(url + "/api/v1/me", token=bogus)[2] == body  # one answer for every bad credential


def test_a_token_says_who_and_never_more_than_the_membership(served: Served, tmp_path: Path) -> None:
    url, _ = served
    data = tmp_path / "cosmogen-data"
    user, token = member_with_token(data, "ada@example.com", Role.EDITOR)
    status, _, body = call(url + "/api/v1/me", token=token)
    assert status == 200, body
    assert body == {"user_id": user, "workspace_id": "default", "role": "editor", "via": "token"}
    _, clamped = member_with_token(data, "bob@example.com", Role.VIEWER, token_role=Role.ADMIN)
    assert call(url + "/api/v1/me", token=clamped)[2]["role"] == "viewer"


def test_revoked_and_expired_tokens_stop_at_once(served: Served, tmp_path: Path) -> None:
    url, _ = served
    data = tmp_path / "cosmogen-data"
    _, revoked = member_with_token(data, "carol@example.com", Role.ADMIN)
    _, expired = member_with_token(data, "dan@example.com", Role.ADMIN)
    assert call(url + "/api/v1/me", token=revoked)[0] == 200
    db = Database.open(data_dir=data)
    try:
        with db.engine.begin() as conn:
            first = conn.execute(api_tokens.select().order_by(api_tokens.c.created_at)).first()
            assert first is not None
            revoke_token(first.id, utcnow())(conn)
            conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id != first.id)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
    finally:
        db.close()
    assert call(url + "/api/v1/me", token=revoked)[0] == 401
    assert call(url + "/api/v1/me", token=expired)[0] == 401


def test_the_spec_is_served_and_unknown_routes_are_problems(served: Served) -> None:
    url, _ = served
    status, _, spec = call(url + "/openapi.json")
    assert status == 200 and "/api/v1/me" in spec["paths"]
    status, headers, body = call(url + "/api/v1/nothing-here")
    assert status == 404 and headers["content-type"] == "application/problem+json"
    assert body["code"] == "not_found"
    assert call(url + "/docs")[0] == 404  # no CDN-loading docs page
