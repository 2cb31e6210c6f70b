"""The accounts API over real HTTP against `cosmogen serve` in its own process, with the provider
simulator as the providers (reached through serve's egress allowlist, never with the guard off):
API-key accounts probed like the CLI, roles, workspaces, change, test, disable/enable, remove, the audit
log; an OAuth account connected through the real browser callback route, refreshed now, used by a
provider binding, disconnected with revocation and removed."""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmogen.domain.roles import Role
from cosmogen.store.tables import workspaces
from cosmogen.testing.simulator import DEFAULT_API_KEY, Simulator, ThreadedSimulator
from tests.integration.api.accounts_helpers import Seen, authorize, get, member, open_store, register, start
from tests.integration.api.helpers import call
from tests.integration.api.sessions_support import create_owner, login, member_with_password
from tests.integration.conftest import ROOT, serving


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    with ThreadedSimulator() as server:
        yield server


@pytest.fixture
def api(tmp_path: Path, sim: Simulator) -> Iterator[str]:
    with serving(tmp_path, "--no-sandbox") as (url, _):
        yield url


def test_api_key_accounts_roles_changes_and_audit(api: str, sim: Simulator, tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    admin_id, admin = member(data, None, "ada@example.com", Role.ADMIN)
    _, editor = member(data, None, "ed@example.com", Role.EDITOR)
    _, viewer = member(data, None, "vi@example.com", Role.VIEWER)
    accounts = api + "/api/v1/accounts"
    body = {"name": "gpt", "provider": "openai", "base_url": sim.url, "secrets": {"api_key": DEFAULT_API_KEY}}

    # Only admins change accounts; viewers read.
    assert call(accounts, "POST", token=editor, body=body)[0] == 403
    assert call(accounts, "POST", token=viewer, body=body)[0] == 403
    status, _, made = call(accounts, "POST", token=admin, body=body)
    assert status == 201, made
    assert (made["status"], made["verified"], made["secrets"]) == ("connected", True, {"api_key": "********"})
    assert sim.counts["openai.models"] == 1  # the probe: one cheap read at the provider
    listed = call(accounts, token=viewer)[2]["accounts"]
    assert [a["name"] for a in listed] == ["gpt"] and DEFAULT_API_KEY not in json.dumps(listed)

    # A refused key: saved in error, told what to do; bad input says what is wrong.
    bad = {**body, "name": "gpt-bad", "secrets": {"api_key": "sk-wrong-key-000"}}
    status, _, refused = call(accounts, "POST", token=admin, body=bad)
    assert status == 422 and refused["code"] == "test_call_refused" and "sk-wrong" not in json.dumps(refused)
    one = call(f"{accounts}/{refused['account_id']}", token=viewer)[2]
    assert one["status"] == "error" and one["last_error"]["action"]
    fixed = call(
        f"{accounts}/{one['id']}", "PATCH", token=admin, body={"secrets": {"api_key": DEFAULT_API_KEY}}
    )
    assert (fixed[0], fixed[2]["status"], fixed[2]["verified"]) == (200, "connected", True)
    assert fixed[2]["last_error"] is None and sim.counts["openai.models"] == 3
    cases = [
        ({**body}, 409, "name_taken"),
        ({**body, "name": "x1", "provider": "gmail"}, 422, "unknown_provider"),
        ({**body, "name": "x2", "provider": "slack"}, 422, "wrong_auth_kind"),
        ({**body, "name": "x3", "secrets": {}}, 422, "missing_secret"),
        ({**body, "name": "x4", "secrets": {"token": "abc"}}, 422, "unknown_secret_field"),
        ({**body, "name": "x5", "settings": {"rate_limit": "fast"}}, 422, "invalid_settings"),
    ]
    for sent, want_status, want_code in cases:
        status, headers, problem = call(accounts, "POST", token=admin, body=sent)
        assert (status, problem["code"]) == (want_status, want_code), (sent, problem)
        assert headers["content-type"] == "application/problem+json" and problem["hint"]

    # Mass assignment (API-04): protected or unknown properties are refused, naming the field; no change.
    account = f"{accounts}/{made['id']}"
    protected = {"id": "x", "workspace_id": "other", "status": "connected", "verified": True,
                 "created_at": "2020-01-01T00:00:00Z", "owner_id": "u1", "ciphertext": "00",
                 "version": 9, "last_error": None, "scopes": ["admin"]}  # fmt: skip
    untouched = call(account, token=admin)[2]
    for key, value in protected.items():
        for target, method, sent in [(accounts, "POST", {**body, "name": "mass"}), (account, "PATCH", {})]:
            status, _, problem = call(target, method, token=admin, body={**sent, key: value})
            assert status == 422 and problem["errors"][0]["field"].endswith(key), (key, method, problem)
    assert call(account, token=admin)[2] == untouched and "mass" not in json.dumps(
        call(accounts, token=admin)
    )

    # Change: tier and settings; disable (runs refused), enable (probed again), test now.
    account = f"{accounts}/{made['id']}"
    status, _, changed = call(
        account, "PATCH", token=admin, body={"tier": "production", "settings": {"x": 1}}
    )
    assert status == 200 and (changed["tier"], changed["settings"]) == ("production", {"x": 1})
    assert call(account, "PATCH", token=editor, body={"tier": "sandbox"})[0] == 403
    assert call(account + "/disable", "POST", token=admin)[2]["status"] == "disabled"
    assert call(account + "/disable", "POST", token=admin)[2]["code"] == "already_disabled"
    assert call(account + "/test", "POST", token=admin)[2]["code"] == "disabled"
    new_key = call(account, "PATCH", token=admin, body={"secrets": {"api_key": DEFAULT_API_KEY}})[2]
    assert new_key["status"] == "disabled" and sim.counts["openai.models"] == 3  # stays off, not probed
    enabled = call(account + "/enable", "POST", token=admin)[2]
    assert enabled["status"] == "connected" and sim.counts["openai.models"] == 4  # enable checks it
    assert call(account + "/test", "POST", token=admin)[2]["status"] == "connected"
    assert sim.counts["openai.models"] == 5
    assert call(account + "/refresh", "POST", token=admin)[2]["code"] == "not_oauth"

    # Another workspace sees none of it (404, the same as a missing id).
    db = open_store(data, None)
    try:
        with db.engine.begin() as conn:
            conn.execute(workspaces.insert().values(id="other", name="Other"))
    finally:
        db.close()
    _, outsider = member(data, None, "out@example.com", Role.ADMIN, workspace="other")
    assert call(accounts, token=outsider)[2] == {"accounts": []}
    for method, path in [("GET", ""), ("PATCH", ""), ("POST", "/test"), ("DELETE", "")]:
        sent_body = {"tier": "sandbox"} if method == "PATCH" else None
        assert call(account + path, method, token=outsider, body=sent_body)[0] == 404

    # Remove; the audit log has every change, by whom, without a secret; admins only; paged.
    assert call(account, "DELETE", token=admin)[0] == 204
    assert call(account, token=admin)[0] == 404
    assert call(api + "/api/v1/audit", token=viewer)[0] == 403
    entries = call(api + "/api/v1/audit?limit=500", token=admin)[2]["entries"]
    mine = [e["action"] for e in reversed(entries) if e["object_id"] == made["id"]]
    assert mine == [
        "account.create", "account.connect", "account.change", "account.disable", "account.change",
        "account.connect", "account.connect", "account.remove",
    ]  # fmt: skip
    assert all(e["actor_user_id"] == admin_id for e in entries)
    assert DEFAULT_API_KEY not in json.dumps(entries) and "sk-wrong" not in json.dumps(entries)
    pages: list[str] = []
    before: str | None = None
    while True:
        query = "/api/v1/audit?limit=3" + (f"&before={before}" if before else "")
        page = call(api + query, token=admin)[2]
        pages.extend(e["id"] for e in page["entries"])
        before = page["next_before"]
        if before is None:
            break
    assert pages == [e["id"] for e in entries] and len(pages) > 6
    assert call(api + "/api/v1/audit?before=nope", token=admin)[2]["code"] == "bad_cursor"


def universe(tmp_path: Path) -> str:
    path = tmp_path / "post.json"
    nodes = [
        {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "tides"}},
        {"id": "tell", "type": "become", "entity": "post:1", "transform": {"told": "true"}},
    ]
    binding = {
        "id": "post", "node": "tell", "kind": "provider", "capability": "slack.post_message",
        "account": "team", "settings": {"channel": "C0SIM00001", "text": "About {{ topic }}"},
    }  # fmt: skip
    spec = {"cosmogen": "universe/1", "name": "post", "nodes": nodes,
            "edges": [{"source": "b", "target": "tell"}], "bindings": [binding]}  # fmt: skip
    path.write_text(json.dumps(spec))
    return str(path)


def test_oauth_account_through_the_browser_callback_then_used_refreshed_disconnected(
    sim: Simulator, tmp_path: Path
) -> None:
    data = tmp_path / "cosmogen-data"
    client_secret = f"cs-{secrets.token_hex(16)}"
    seen = Seen()
    with serving(tmp_path, "--no-sandbox") as (url, _):
        _, admin = member(data, None, "ada@example.com", Role.ADMIN)
        register(sim, url, client_secret)
        started = start(url, admin, sim, client_secret, return_to="/studio/accounts?tab=oauth", seen=seen)
        assert started["authorization_url"].startswith(f"{sim.url}/oauth/authorize?")
        back = authorize(started["authorization_url"], seen)
        assert back.startswith(f"{url}/oauth/callback/slack?")
        status, headers, page = get(back, token=admin)  # the same browser (credential) comes back
        seen.add(str(status), headers, page)
        assert status == 303 and headers["location"] == "/studio/accounts?tab=oauth", (status, page)
        assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
        account = f"{url}/api/v1/accounts/{started['account_id']}"
        got = call(account, token=admin)[2]
        seen.add(got)
        assert (got["status"], got["scopes"], got["secrets"]) == (
            "connected", ["chat:write"],
            {"access_token": "********", "client_secret": "********", "refresh_token": "********"},
        )  # fmt: skip
        assert got["settings"]["oauth"]["client_id"] == "studio-app"

        # Refresh now: one token request, a new access token.
        [family] = sim.oauth.families.values()
        first = family.access_tokens[-1]
        calls = sim.counts["oauth.token"]
        refreshed = call(account + "/refresh", "POST", token=admin)[2]
        seen.add(refreshed)
        assert refreshed["status"] == "connected" and sim.counts["oauth.token"] == calls + 1
        assert family.access_tokens[-1] != first
        actions = [e["action"] for e in call(url + "/api/v1/audit", token=admin)[2]["entries"]]
        assert actions[:3] == ["account.refresh", "account.connect", "account.connect_start"]

    # Used: a provider binding posts to Slack with the token the callback stored (then refreshed).
    env_cmd = [sys.executable, "-m", "cosmogen", "run", universe(tmp_path), "--json"]
    env = {**os.environ, "COSMOGEN_DATA_DIR": str(data)}
    ran = subprocess.run(env_cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert ran.returncode == 0 and json.loads(ran.stdout)["status"] == "succeeded", ran.stdout + ran.stderr
    [posted] = sim.log.select("slack.postMessage")
    assert posted.credential == family.access_tokens[-1] and posted.body["text"] == "About tides"

    with serving(tmp_path, "--no-sandbox") as (url, _):
        account = f"{url}/api/v1/accounts/{started['account_id']}"
        # The grant ends at the provider: refresh now says reconnect, and the token manager audits it.
        assert sim.oauth.revoke_family(family.access_tokens[-1])
        status, _, lost = call(account + "/refresh", "POST", token=admin)
        seen.add(lost)
        assert status == 409 and lost["code"] == "refresh_failed" and "reconnect" in lost["detail"]
        assert call(account, token=admin)[2]["status"] == "expired"
        entries = call(url + "/api/v1/audit", token=admin)[2]["entries"]
        assert [e["action"] for e in entries[:2]] == ["account.refresh", "account.needs_reauth"]
        assert entries[1]["actor_user_id"] is None and entries[1]["details"]["action"] == "reconnect"
        done = call(account + "/disconnect", "POST", token=admin)[2]
        seen.add(done)
        assert done["account"]["status"] == "expired" and done["tokens_deleted"] == 2
        assert [r["verdict"] for r in done["revocations"]] == ["done", "done"]
        assert done["account"]["secrets"] == {"client_secret": "********"}
        assert sim.counts["oauth.revoke"] == 2
        assert call(account, "DELETE", token=admin)[0] == 204
        entries = call(url + "/api/v1/audit", token=admin)[2]["entries"]
        seen.add(entries)
        assert [e["action"] for e in entries[:2]] == ["account.remove", "account.disconnect"]
    issued = [t for f in sim.oauth.families.values() for t in (*f.access_tokens, *f.refresh_tokens)]
    assert issued and not [t for t in [*issued, client_secret] for text in seen.texts if t in text]


def test_oauth_connect_in_a_signed_in_browser_with_the_session_cookie(sim: Simulator, tmp_path: Path) -> None:
    """The studio's way: the owner signed in (cookie + CSRF token) starts the flow; the provider's
    cross-site redirect arrives without the SameSite=Strict cookie, our same-origin page repeats it with
    the cookie, and only that session completes it."""
    client_secret = f"cs-{secrets.token_hex(16)}"
    with serving(tmp_path, "--no-sandbox") as (url, _):
        owner = create_owner(url, tmp_path / "serve.log")
        member_with_password(
            tmp_path / "cosmogen-data", "eve@example.com", "eve's own long passphrase", "admin"
        )
        eve = login(url, "eve@example.com", "eve's own long passphrase")
        register(sim, url, client_secret)
        oauth = {"authorize_url": f"{sim.url}/oauth/authorize", "token_url": f"{sim.url}/oauth/token",
                 "revoke_url": f"{sim.url}/oauth/revoke", "issuer": sim.url}  # fmt: skip
        body = {
            "name": "team", "provider": "slack", "client_id": "studio-app", "client_secret": client_secret,
            "settings": {"oauth": oauth}, "base_url": sim.url, "return_to": "/studio/accounts",
        }  # fmt: skip
        # A cross-site form cannot start it: the cookie alone, without our CSRF token, is refused.
        forged = call(url + "/api/v1/accounts/oauth/start", "POST", body=body,
                      headers={"Cookie": f"__Host-cosmogen_session={owner.cookie}"})  # fmt: skip
        assert forged[0] == 403
        status, _, started = owner.call("/api/v1/accounts/oauth/start", "POST", body=body)
        assert status == 201, started
        back = authorize(started["authorization_url"])

        # Another signed-in person cannot complete it (and the state is spent).
        status, _, page = get(back, cookie=eve.cookie)
        assert status == 400 and json.loads(page)["code"] == "other_session"
        status, _, started = owner.call("/api/v1/accounts/oauth/start", "POST", body=body)
        assert status == 201, started
        back = authorize(started["authorization_url"])

        # The redirect from the provider, without the Strict cookie: a same-origin hop, then with it.
        status, _, page = get(back, accept="text/html")
        assert status == 200
        found = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', page)
        assert found is not None
        status, headers, page = get(
            url + html.unescape(found.group(1)), accept="text/html", cookie=owner.cookie
        )
        assert status == 303 and headers["location"] == "/studio/accounts", page
        assert owner.call(f"/api/v1/accounts/{started['account_id']}")[2]["status"] == "connected"
        entries = owner.call("/api/v1/audit")[2]["entries"]
        assert entries[0]["action"] == "account.connect" and entries[0]["actor_user_id"] is not None
