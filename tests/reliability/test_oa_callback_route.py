"""OA-09, OA-10, OA-11 and OA-13 over the server's real browser callback route
(`GET /oauth/callback/{provider}` of `cosmogen serve`, in its own process), with the provider simulator
as the authorization server, on SQLite and PostgreSQL:

- OA-09: a replayed response (its state already used), a missing state, an unknown state, an expired
  flow are refused; none causes a token request.
- OA-10: a response completed by another session (another signed-in credential) is refused and spends
  the state; a visit with no session is refused without touching the flow; a response naming another
  issuer, or arriving at another provider's callback (mix-up), is refused; 0 token requests for all.
- OA-11: 50 open-redirect payloads as `return_to`: every successful callback redirects (303) to a
  same-origin path, never elsewhere.
- OA-13: not one token, code-exchange secret or client secret in any response body, header or redirect
  URL the caller saw (raw or encoded).
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import pytest
from sqlalchemy import update
from tests.integration.api.accounts_helpers import (
    Seen,
    authorize,
    get,
    member,
    open_store,
    query_of,
    register,
    start,
)
from tests.integration.api.helpers import call
from tests.integration.conftest import serving

from cosmogen.domain.roles import Role
from cosmogen.store.tables import oauth_flows, utcnow
from cosmogen.testing.simulator import Simulator, ThreadedSimulator

# Open-redirect payloads for return_to (OWASP and PortSwigger lists; encodings, schemes, confusables).
PAYLOADS = [
    "https://evil.example", "http://evil.example/", "//evil.example", "///evil.example", "////evil.example",
    "/\\evil.example", "\\\\evil.example", "\\/evil.example", "/\\/evil.example", "https:evil.example",
    "http:/evil.example", "javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<script>1</script>",
    "vbscript:msgbox(1)", "%2F%2Fevil.example", "%2f%2fevil.example", "/%2F/evil.example",
    "/%2f%2fevil.example", "%252F%252Fevil.example", "/%252F%252Fevil.example", "%25252F%25252Fevil.example",
    "/%5Cevil.example", "/%5cevil.example", "%5C%5Cevil.example", "/\t/evil.example", "/\n/evil.example",
    "/\r/evil.example", "/%09/evil.example", "/%0a/evil.example", "/%0d/evil.example", " //evil.example",
    "/ /evil.example", "/\u3000/evil.example", "/\u200b/evil.example", "/\ufeff/evil.example",
    "//evil.example@good", "https://good@evil.example", "evil.example", "@evil.example", ".evil.example",
    "/.\\evil.example", "\u2215\u2215evil.example", "/\u2215evil.example", "//\u3002evil.example",
    "ftp://evil.example", "//evil.example/%2e%2e", "/%00/evil.example", "\x00//evil.example",
    "/" + "a" * 3000,
]  # fmt: skip
assert len(PAYLOADS) == 50 and len(set(PAYLOADS)) == 50


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    with ThreadedSimulator() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def served_store(
    request: pytest.FixtureRequest, tmp_path: Path, sim: Simulator
) -> Iterator[tuple[str, str | None]]:
    database_url = request.getfixturevalue("clean_pg_url") if request.param == "postgresql" else None
    args = ["--no-sandbox"] + (["--database-url", database_url] if database_url else [])
    with serving(tmp_path, *args) as (url, _):
        yield url, database_url


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(), quote(value, safe=""), *(value[i : i + 12] for i in range(max(len(value) - 11, 1))),
    ]  # fmt: skip


def refresh_target(page: str) -> str:
    found = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', page)
    assert found is not None, page
    return html.unescape(found.group(1))


def same_origin_path(location: str) -> bool:
    parts = urlsplit(location)
    return (
        location.startswith("/")
        and not location.startswith("//")
        and "\\" not in location
        and not (parts.scheme or parts.netloc)
    )


def test_oa_callback_route_refusals_redirects_and_no_token_anywhere(
    served_store: tuple[str, str | None], sim: Simulator, tmp_path: Path
) -> None:
    api, database_url = served_store
    data = tmp_path / "cosmogen-data"
    _, admin = member(data, database_url, "ada@example.com", Role.ADMIN)
    _, other = member(
        data, database_url, "eve@example.com", Role.ADMIN
    )  # another session of the same workspace
    client_secret = f"cs-{secrets.token_hex(16)}"
    register(sim, api, client_secret, providers=("slack", "x"))
    seen = Seen()

    def visit(url: str, token: str | None, accept: str | None = None) -> tuple[int, dict[str, str], str]:
        got = get(url, token=token, accept=accept)
        seen.add(url, str(got[0]), got[1], got[2])
        return got

    def refused(url: str, token: str | None, code: str, status: int = 400) -> None:
        got_status, headers, body = visit(url, token)
        assert (got_status, json.loads(body)["code"]) == (status, code), body
        assert headers["cache-control"] == "no-store" and "location" not in headers

    n = 0

    def fresh(return_to: str | None = "/studio") -> tuple[dict[str, object], str]:
        nonlocal n
        n += 1
        started = start(api, admin, sim, client_secret, name=f"acct{n}", return_to=return_to, seen=seen)
        back = authorize(str(started["authorization_url"]), seen)
        return started, back

    token_calls = sim.counts["oauth.token"]

    # OA-09: replay, missing state, unknown state, expired. The first one goes through the same-site hop.
    _, back = fresh()
    page = visit(back, None, accept="text/html")[2]
    target = refresh_target(page)
    status, headers, _ = visit(api + target, admin, accept="text/html")
    assert status == 303 and headers["location"] == "/studio"
    assert sim.counts["oauth.token"] == token_calls + 1
    token_calls += 1
    refused(back, admin, "state_used")
    params = query_of(back)
    base = back.split("?", 1)[0]
    refused(f"{base}?code={params['code']}&iss={quote(sim.url, safe='')}", admin, "missing_state")
    refused(f"{base}?code={params['code']}&state={'A' * 43}", admin, "unknown_state")
    _, back = fresh()
    db = open_store(data, database_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(update(oauth_flows).where(oauth_flows.c.used_at.is_(None))
                         .values(expires_at=utcnow() - timedelta(seconds=1)))  # fmt: skip
    finally:
        db.close()
    refused(back, admin, "expired")

    # OA-10: no session (flow untouched), another session (refused, state spent), wrong issuer, mix-up.
    _, back = fresh()
    refused(back, None, "unauthenticated", 401)
    # A browser arrives without its SameSite=Strict cookie (cross-site redirect): a same-origin page
    # sends it on to the same callback, where a browser without a session is refused (no loop).
    status, page_headers, page = visit(back, None, accept="text/html")
    assert status == 200 and page_headers["content-type"].startswith("text/html")
    target = refresh_target(page)
    assert target.startswith("/oauth/callback/slack?") and "resumed=1" in target
    status, page_headers, page = visit(api + target, None, accept="text/html")
    assert status == 401 and "<h1>" in page and page_headers["content-type"].startswith("text/html")
    refused(back, other, "other_session")
    refused(back, admin, "state_used")  # one state, one response
    _, back = fresh()
    params = query_of(back)
    forged = (
        f"{base}?code={params['code']}&state={params['state']}&iss={quote('https://evil.example', safe='')}"
    )
    refused(forged, admin, "issuer_mismatch")
    _, back = fresh()
    refused(back.replace("/oauth/callback/slack?", "/oauth/callback/x?"), admin, "mix_up")
    assert sim.counts["oauth.token"] == token_calls  # not one token request for a refused response
    accounts = {a["name"]: a for a in call(api + "/api/v1/accounts", token=admin)[2]["accounts"]}
    assert accounts["acct1"]["status"] == "connected"
    assert all(accounts[f"acct{i}"]["status"] != "connected" for i in range(2, n + 1))

    # OA-11: 50 open-redirect payloads; every success lands on a same-origin path.
    landed = []
    for payload in PAYLOADS:
        _, back = fresh(return_to=payload)
        status, headers, body = visit(back, admin)
        assert status == 303, body
        landed.append(headers["location"])
    assert all(same_origin_path(loc) for loc in landed), [p for p in landed if not same_origin_path(p)]
    # Resolved the way a browser does against our origin, each stays on it.
    assert {urlsplit(urljoin(api + "/oauth/callback/slack", loc)).netloc for loc in landed} == {
        urlsplit(api).netloc
    }
    assert (
        landed.count("/") >= 48
    )  # all but path-only look-alikes (e.g. "/\u2215evil.example") fall back to /
    ok = fresh(return_to="/studio/accounts?tab=oauth#x")[1]
    assert visit(ok, admin)[1]["location"] == "/studio/accounts?tab=oauth#x"

    # OA-13: the lists, the account pages and the audit the caller can read are shown too.
    audit = call(api + "/api/v1/audit?limit=500", token=admin)[2]
    seen.add(call(api + "/api/v1/accounts", token=admin)[2], audit)
    actions = [e["action"] for e in audit["entries"]]
    # Every start and every connection audited; a refusal only when it was about the account's own flow.
    assert (actions.count("account.connect_start"), actions.count("account.connect")) == (n, 52)
    refusals = [e["details"]["code"] for e in audit["entries"] if e["action"] == "account.connect_refused"]
    assert sorted(refusals) == ["issuer_mismatch", "mix_up"]
    issued = [t for f in sim.oauth.families.values() for t in (*f.access_tokens, *f.refresh_tokens)]
    assert len(issued) >= 2 * 52 and len(seen.texts) > 300
    basic = base64.b64encode(f"studio-app:{client_secret}".encode()).decode()
    canaries = [*issued, client_secret, basic]
    leaks = [c for c in canaries for form in forms(c) for text in seen.texts if form in text]
    assert leaks == []
