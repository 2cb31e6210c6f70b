"""`cosmogen tokens create|list|revoke` through the real entry point, against a served store: the token
is printed once and works over HTTP at the user's role at most; lists show no value; revoke stops it at
once; unknown users, non-members, roles above the user's and unknown ids are refused with what to do."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.api.helpers import call
from tests.integration.api.sessions_support import member_with_password
from tests.integration.conftest import CLI, serving


def test_operator_makes_lists_and_revokes_tokens(tmp_path: Path, cosmogen: CLI) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        member_with_password(data, "ops@example.com", "a long enough passphrase", role="editor")
        made = cosmogen("tokens", "create", "--email", "ops@example.com", "--name", "deploy")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("cg_") and "shown once" in made.stderr and token not in made.stderr
        status, _, me = call(url + "/api/v1/me", token=token)
        assert status == 200 and me["role"] == "editor" and me["via"] == "token"
        low = cosmogen("tokens", "create", "--email", "OPS@example.com", "--name", "ro", "--role", "viewer")
        assert (
            low.returncode == 0 and call(url + "/api/v1/me", token=low.stdout.strip())[2]["role"] == "viewer"
        )
        listed = cosmogen("tokens", "list", "--json")
        rows = json.loads(listed.stdout)
        assert [(r["name"], r["role"], r["state"]) for r in rows] == [
            ("deploy", "editor", "active"),
            ("ro", "viewer", "active"),
        ]
        assert token not in listed.stdout and token[3:] not in listed.stdout
        revoked = cosmogen("tokens", "revoke", rows[0]["id"])
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        assert call(url + "/api/v1/me", token=token)[0] == 401
        assert "revoked" in cosmogen("tokens", "list").stdout
        refusals = {
            ("--email", "nobody@example.com", "--name", "x"): "no user",
            ("--email", "ops@example.com", "--name", "x", "--role", "admin"): "cannot have more",
            ("--email", "ops@example.com", "--name", "x", "--workspace", "other"): "not a member",
        }
        for args, why in refusals.items():
            refused = cosmogen("tokens", "create", *args)
            assert refused.returncode != 0 and why in refused.stderr and refused.stdout == ""
        unknown = cosmogen("tokens", "revoke", "no-such-id")
        assert unknown.returncode != 0 and "tokens list" in unknown.stderr
