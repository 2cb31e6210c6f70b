"""LEAK-01 over the served API: the canary scenario driven through `cosmogen serve`'s HTTP API, with
every answer, frame and log line captured and searched, on SQLite and PostgreSQL.

Canaries (Part D.3), fresh per run: an OpenAI and an Anthropic API key, a basic-auth password, an OAuth
client secret, the OAuth access and refresh tokens the simulator's authorization server issues (its name
carries a random core, so every token and code it mints is one), our users' passwords (the owner's, its
replacement, an invited member's), and what the server mints: the session cookies, an API token, an
invite token, a webhook signing secret and the webhook's path token.

The scenario, all through HTTP: signing in (first with the canary as a wrong password); an API token
minted from the session; API-key and basic accounts, a provider echoing our key in a 401 and in 500s;
bad input carrying canaries (wrong types, unknown fields, too long, not JSON); Slack connected through
the real browser callback and refreshed; the token endpoint answering invalid_grant, and the token and
revocation endpoints echoing the client secret and tokens (401 and 500) on refresh and disconnect; runs
calling every account, then with providers echoing our `Authorization` header as retried 500s and as
401s; a signed webhook launch fired with a bad and a good signature; a password change and an invite.

Captured: every answer's status line, headers and raw body (errors included), `/openapi.json`, `/metrics`,
account, audit, token, member, run and launch reads, the exported universe JSON, every WebSocket frame
of a listener open from the start (up to the store's last event), the same events again over SSE, and the
server's stdout and stderr with the root logger at DEBUG (COSMOGEN_LOG_LEVEL=debug). Answers that show a
value once by design (a create answer, a sign-in's Set-Cookie) are searched for every other canary.
0 hits in raw, hex, base64, base64url and percent-encoded form, nor of any 12-character piece of a
canary's random part.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.integration.api.accounts_helpers import CLIENT_ID, _NoFollow, authorize
from tests.integration.api.sessions_support import COOKIE, session_cookie
from tests.integration.api.workspaces import open_store
from tests.integration.conftest import serving
from tests.reliability.test_leak01_canaries import _CORE, _canaries
from websockets.asyncio.client import connect

from cosmogen.domain.roles import Role
from cosmogen.identity import users
from cosmogen.identity.passwords import Passwords
from cosmogen.store.tables import run_events, workspaces
from cosmogen.testing.canaries import hits
from cosmogen.testing.simulator import Fault, Simulator, ThreadedSimulator

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Client:
    """Every request goes through here, so every answer is kept (status line, headers, raw body)."""

    url: str
    token: str | None = None
    cookie: str | None = None
    csrf: str | None = None
    answers: list[tuple[str, bytes]] = field(default_factory=list)
    shown_once: list[tuple[str, str, bytes]] = field(default_factory=list)  # (canary names, where, text)

    def raw(
        self, path: str, method: str = "GET", *, body: Any = None, data: bytes | None = None,
        headers: dict[str, str] | None = None, shows: str | None = None, token: bool = True,
    ) -> Answer:  # fmt: skip
        sent = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        if token and self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        elif self.cookie:
            sent.update({"Cookie": f"{COOKIE}={self.cookie}", "Origin": self.url})
            sent.update({"X-CSRF-Token": self.csrf} if self.csrf else {})
        target = path if path.startswith("http") else self.url + path
        request = urllib.request.Request(target, data=data, method=method, headers=sent)  # noqa: S310
        opener = urllib.request.build_opener(_NoFollow)
        try:
            with opener.open(request, timeout=60) as response:
                status, got, content = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, got, content = error.code, dict(error.headers), error.read()
        where = f"{method} {path} -> {status}"
        text = f"HTTP {status}\n" + "".join(f"{k}: {v}\n" for k, v in got.items()) + "\n"
        record = text.encode() + content
        if shows is None:
            self.answers.append((where, record))
        else:  # a value shown here once by design: searched for every other canary
            self.shown_once.append((shows, where, record))
        return status, {k.lower(): v for k, v in got.items()}, content

    def json(self, path: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any]:
        status, _, content = self.raw(path, method, **kwargs)
        return status, json.loads(content) if content else None


class Listener(threading.Thread):
    """A WebSocket client of the workspace's event stream, open for the whole scenario."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.uri = url.replace("http://", "ws://") + "/api/v1/events/ws"
        self.token = token
        self.frames: list[str] = []
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._listen())
        except BaseException as exc:
            self.error = exc
            self.opened.set()

    async def _listen(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with connect(self.uri, proxy=None, additional_headers=headers) as ws:
            self.opened.set()
            while not self.stop.is_set():
                try:
                    message = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                self.frames.append(message if isinstance(message, str) else message.decode())


def _owner(where: Path | str, email: str, password: str) -> None:
    """The workspace's admin with a password, made in the store (signing in is what goes over HTTP)."""
    db = open_store(where)
    try:
        with db.engine.begin() as conn:
            if conn.execute(workspaces.select().where(workspaces.c.id == "default")).first() is None:
                conn.execute(workspaces.insert().values(id="default", name="Default"))
            user_id = users.create_user(email, "owner", Passwords().hash(password))(conn)
            users.add_member("default", user_id, Role.ADMIN)(conn)
    finally:
        db.close()


def _universe(*bindings: tuple[str, str, str, dict[str, Any]]) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "launch"}}
    ]
    edges = []
    made = []
    for index, (binding_id, capability, account, settings) in enumerate(bindings):
        node = f"n{index}"
        nodes.append({"id": node, "type": "become", "entity": "post:1", "transform": {f"s{index}": "true"}})
        edges.append({"source": nodes[-2]["id"], "target": node})
        made.append({"id": binding_id, "node": node, "kind": "provider", "capability": capability,
                     "account": account, "settings": settings, "on_error": "continue"})  # fmt: skip
    return {"cosmogen": "universe/1", "name": "leak-api", "nodes": nodes, "edges": edges, "bindings": made}


CALLS = (
    ("chat", "openai.chat", "openai-main", {"prompt": "hello", "max_tokens": 5}),
    ("claude", "anthropic.messages", "anthropic-main", {"prompt": "hello", "max_tokens": 5}),
    ("slack", "slack.post_message", "team-slack", {"channel": "C0SIM00001", "text": "hi"}),
    ("wiki", "http.request", "wiki", {"method": "POST", "path": "/webhook/pages", "body": {"title": "hi"}}),
)


def _settle(client: Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        status, run = client.json(f"/api/v1/runs/{run_id}")
        assert status == 200, run
        if run["status"] not in ("queued", "running"):
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


def _bad_inputs(client: Client, c: dict[str, str]) -> None:
    """Requests that fail validation while carrying canaries: the errors must not echo them."""
    base = {"name": "bad", "provider": "openai", "test": False}
    for body in (
        {**base, "secrets": {"api_key": {"value": c["openai"]}}},  # wrong type
        {**base, "secrets": {"api_key": [c["openai"]]}},
        {**base, "secrets": {"api_key": c["openai"]}, "name": f"bad name {c['openai']}"},  # bad pattern
        {**base, "secrets": {"api_key": c["openai"]}, "tier": c["anthropic"]},  # not one of the choices
        {**base, "secrets": {"api_key": c["openai"]}, "api_key": c["openai"]},  # unknown field
        {**base, "secrets": {"api_key": c["openai"], "password": c["password"]}},  # not this kind's
        {**base, "provider": "nope", "secrets": {"api_key": c["openai"]}},
        {**base, "secrets": {"api_key": c["openai"]}, "name": c["openai"] * 10},  # too long
    ):
        status, problem = client.json("/api/v1/accounts", "POST", body=body)
        assert status == 422, (body, problem)
    broken = ('{"name": "x", "provider": "openai", "secrets": {"api_key": "' + c["openai"] + '"').encode()
    assert client.raw("/api/v1/accounts", "POST", data=broken)[0] == 422  # not JSON at all
    start = {"name": "bad name", "provider": "slack", "client_id": "x", "client_secret": c["client_secret"]}
    assert client.json("/api/v1/accounts/oauth/start", "POST", body=start)[0] == 422
    too_long = {"email": "x@example.com", "password": c["password"] * 100}
    assert client.json("/api/v1/session", "POST", body=too_long, token=False)[0] == 422


def _sign_in(client: Client, c: dict[str, str], owner: str) -> None:
    """A failed and a good sign-in (the canary password), then an API token minted from the session."""
    for email, password in (("nobody@example.com", c["password"]), (owner, c["password"] + "x")):
        refused = {"email": email, "password": password}
        assert client.json("/api/v1/session", "POST", body=refused, token=False)[0] == 401
    right = {"email": owner, "password": c["password"]}
    status, headers, content = client.raw("/api/v1/session", "POST", body=right, token=False, shows="session")
    assert status == 200, content
    c["session"], _ = session_cookie(headers)
    client.cookie, client.csrf = c["session"], json.loads(content)["csrf_token"]
    assert client.json("/api/v1/session", token=False)[0] == 200
    status, _, content = client.raw(
        "/api/v1/tokens", "POST", body={"name": "leak", "role": "admin"}, token=False, shows="api_token"
    )
    assert status == 201, content
    client.token = c["api_token"] = json.loads(content)["token"]


def _people(client: Client, c: dict[str, str], owner: str) -> None:
    """A password change (a wrong current one first) and an invited member setting theirs."""
    wrong = {"current_password": c["password"] + "x", "new_password": c["new_password"]}
    assert client.json("/api/v1/password", "PUT", body=wrong, token=False)[0] in (400, 403)
    weak = {"current_password": c["password"], "new_password": "short"}
    assert client.json("/api/v1/password", "PUT", body=weak, token=False)[0] == 422
    right = {"current_password": c["password"], "new_password": c["new_password"]}
    status, headers, content = client.raw(
        "/api/v1/password", "PUT", body=right, token=False, shows="new_session"
    )
    assert status == 200, content
    c["new_session"], _ = session_cookie(headers)
    client.cookie, client.csrf = c["new_session"], json.loads(content)["csrf_token"]
    added = {"email": "new@example.com", "role": "viewer"}
    status, _, content = client.raw("/api/v1/members", "POST", body=added, shows="invite")
    assert status == 201, content
    c["invite"] = json.loads(content)["invite_token"]
    weak = {"token": c["invite"], "password": "short"}
    assert client.json("/api/v1/invite", "POST", body=weak, token=False)[0] == 422
    unknown = {"token": c["invite"][::-1], "password": c["member_password"]}
    assert client.json("/api/v1/invite", "POST", body=unknown, token=False)[0] == 403
    accept = {"token": c["invite"], "password": c["member_password"]}
    status, headers, content = client.raw(
        "/api/v1/invite", "POST", body=accept, token=False, shows="member_session"
    )
    assert status == 200, content
    c["member_session"], _ = session_cookie(headers)


def _api_key_accounts(client: Client, sim: Simulator, c: dict[str, str]) -> None:
    """API-key and basic accounts; a provider that echoes the key in its refusal, as 401 and 500."""
    sim.api_keys.update({c["openai"], c["anthropic"]})
    openai = {"name": "openai-main", "provider": "openai", "base_url": sim.url,
              "secrets": {"api_key": c["openai"]}}  # fmt: skip
    made = client.json("/api/v1/accounts", "POST", body=openai)
    assert made[0] == 201 and made[1]["verified"], made
    sim.inject(Fault.echo_auth(), "openai.models")
    anthropic = {"name": "anthropic-main", "provider": "anthropic", "base_url": sim.url,
                 "secrets": {"api_key": c["anthropic"]}}  # fmt: skip
    refused = client.json("/api/v1/accounts", "POST", body=anthropic)
    assert refused[0] == 422 and refused[1]["code"] == "test_call_refused", refused
    account = refused[1]["account_id"]
    fixed = client.json(f"/api/v1/accounts/{account}", "PATCH", body={"secrets": {"api_key": c["anthropic"]}})
    assert fixed[0] == 200 and fixed[1]["status"] == "connected", fixed
    sim.inject(Fault("echo_auth", status=500), "openai.models", times=4)
    assert client.json(f"/api/v1/accounts/{account}/test", "POST")[0] >= 400
    sim.faults.clear()
    assert client.json(f"/api/v1/accounts/{account}/test", "POST")[0] == 200
    basic = {"name": "wiki", "provider": "http", "auth_kind": "basic", "base_url": sim.url,
             "secrets": {"username": "bot", "password": c["basic_password"]}}  # fmt: skip
    wiki = client.json("/api/v1/accounts", "POST", body=basic)
    assert wiki[0] == 201, wiki


def _connect(client: Client, sim: Simulator, c: dict[str, str], name: str) -> str:
    """A Slack account connected through the real browser callback: its id."""
    oauth = {"authorize_url": f"{sim.url}/oauth/authorize", "token_url": f"{sim.url}/oauth/token",
             "revoke_url": f"{sim.url}/oauth/revoke", "issuer": sim.url}  # fmt: skip
    body = {"name": name, "provider": "slack", "client_id": CLIENT_ID, "client_secret": c["client_secret"],
            "settings": {"oauth": oauth}, "base_url": sim.url, "return_to": "/studio/accounts"}  # fmt: skip
    status, started = client.json("/api/v1/accounts/oauth/start", "POST", body=body)
    assert status == 201, started
    back = authorize(started["authorization_url"])  # the person approves at the provider
    assert client.raw(back)[0] == 303  # our callback, with the same credential
    return str(started["account_id"])


def _oauth_failures(client: Client, sim: Simulator, c: dict[str, str]) -> None:
    """More Slack accounts: the token endpoint answers invalid_grant; the token and revocation
    endpoints echo what we sent (client secret, refresh and access tokens) as 500 and 401; then the
    account is disconnected and removed."""
    lost = f"/api/v1/accounts/{_connect(client, sim, c, 'team-slack-3')}"
    sim.inject(Fault.invalid_grant(), "oauth.token")
    status, refused = client.json(lost + "/refresh", "POST")
    assert status == 409 and "reconnect" in refused["detail"], refused
    account = f"/api/v1/accounts/{_connect(client, sim, c, 'team-slack-2')}"
    sim.inject(Fault("echo_auth", status=500), "oauth.token", times=None)
    assert client.json(account + "/refresh", "POST")[0] >= 400
    sim.faults.clear()
    sim.inject(Fault.echo_auth(), "oauth.token")
    assert client.json(account + "/refresh", "POST")[0] >= 400
    sim.faults.clear()
    sim.inject(Fault.echo_auth(), "oauth.revoke")
    sim.inject(Fault("echo_auth", status=500), "oauth.revoke", times=None)
    status, done = client.json(account + "/disconnect", "POST")
    assert status == 200 and done["revocations"], done
    sim.faults.clear()
    assert client.json(account + "?keep_grant=true", "DELETE")[0] == 204


def _runs(client: Client, sim: Simulator) -> str:
    """Runs calling every account; then providers echoing our credentials as (retried) 500 and 401.
    Returns the universe."""
    status, saved = client.json("/api/v1/universes", "POST", body={"document": _universe(*CALLS)})
    assert status == 201, saved
    universe = str(saved["universe"]["id"])
    echoing = ("openai.chat", "anthropic.messages", "webhook", "slack.postMessage")
    for faults in ((), ("openai.chat",), echoing):  # a 401 leaves the account in error: the 500s first
        for target in faults:
            fault = Fault.echo_auth() if len(faults) > 1 else Fault("echo_auth", status=500)
            sim.inject(fault, target, times=None if len(faults) > 1 else 4)
        status, run = client.json("/api/v1/runs", "POST", body={"universe_id": universe, "dry_run": False})
        assert status == 201, run
        report = _settle(client, run["run_id"])
        assert report["status"] in ("succeeded", "failed"), report
        sim.faults.clear()
    assert any(e.status == 401 for e in sim.log.select("openai.chat")), "the echo fault never fired"
    assert any(e.status == 500 for e in sim.log.select("openai.chat")), "the 500 never fired"
    return universe


def _webhook(client: Client, c: dict[str, str], universe: str) -> str:
    """A signed webhook launch: its secret shown once, then fired with a good and a bad signature."""
    status, _, content = client.raw(
        "/api/v1/launches",
        "POST",
        body={"universe_id": universe, "triggers": [{"kind": "webhook"}]},
        shows="webhook_secret webhook_path",
    )
    assert status == 201, content
    launch = json.loads(content)
    [path], [secret] = launch["webhook_paths"].values(), launch["webhook_secrets"].values()
    c["webhook_secret"], c["webhook_path"] = secret, path.rsplit("/", 1)[-1]
    body = json.dumps({"order": 42}).encode()
    stamp = int(time.time())
    for key, expected in ((c["openai"], 401), (secret, 202)):
        digest = hmac.new(key.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        signed = {"X-Cosmogen-Signature": f"t={stamp},v1={digest}"}
        status, _, content = client.raw(path, "POST", data=body, headers=signed, token=False)
        assert status == expected, content
    _settle(client, json.loads(content)["run_id"])
    return str(launch["id"])


def _read_everything(client: Client, universe: str, launch: str) -> None:
    for path in ("/api/v1/accounts", "/api/v1/audit?limit=500", "/api/v1/tokens", "/api/v1/me",
                 "/api/v1/members", "/api/v1/runs", "/api/v1/launches", "/api/v1/universes",
                 f"/api/v1/universes/{universe}/export", f"/api/v1/launches/{launch}", "/openapi.json",
                 "/metrics", "/healthz", "/readyz"):  # fmt: skip
        assert client.raw(path)[0] == 200, path
    for account in client.json("/api/v1/accounts")[1]["accounts"]:
        client.raw(f"/api/v1/accounts/{account['id']}")
    for run in client.json("/api/v1/runs")[1]["items"]:
        client.raw(f"/api/v1/runs/{run['id']}")
        client.raw(f"/api/v1/runs/{run['id']}/events")


def _scenario(
    client: Client, sim: Simulator, c: dict[str, str], owner: str, listener: list[Listener]
) -> None:
    _sign_in(client, c, owner)
    listener.append(Listener(client.url, c["api_token"]))
    listener[0].start()
    assert listener[0].opened.wait(30) and listener[0].error is None, listener[0].error
    _api_key_accounts(client, sim, c)
    _bad_inputs(client, c)
    sim.oauth.register_client(CLIENT_ID, c["client_secret"], [f"{client.url}/oauth/callback/slack"])
    slack = _connect(client, sim, c, "team-slack")
    assert client.json(f"/api/v1/accounts/{slack}/refresh", "POST")[0] == 200
    _oauth_failures(client, sim, c)
    universe = _runs(client, sim)
    launch = _webhook(client, c, universe)
    _people(client, c, owner)
    _read_everything(client, universe, launch)


# The values the server mints have no hex core: their random part follows these prefixes.
_MINTED = {
    "api_token": "cg_",
    "webhook_secret": "whsec_",
    "session": "",
    "new_session": "",
    "member_session": "",
    "invite": "",
    "webhook_path": "",
}


def _bodies(canaries: dict[str, str]) -> dict[str, bytes]:
    """The random part of each canary, for the 12-character pieces (a shared prefix is not a leak)."""
    found = {}
    for name, value in canaries.items():
        if name in _MINTED:
            found[name] = value.removeprefix(_MINTED[name]).encode()
        else:
            [core] = _CORE.findall(value.encode())[:1]
            found[name] = core
    return found


def _without(needles: dict[str, bytes], names: list[str]) -> dict[str, bytes]:
    return {k: v for k, v in needles.items() if k not in names}


def _scan(surfaces: dict[str, bytes], needles: dict[str, bytes], bodies: dict[str, bytes]) -> list[str]:
    leaks = []
    for where, blob in surfaces.items():
        for hit in hits(blob, needles) + hits(blob, bodies, substrings=True):
            leaks.append(f"{where}: {hit}")
    return leaks


def _last_event(where: Path | str) -> int:
    db = open_store(where)
    try:
        with db.engine.connect() as conn:
            return int(conn.execute(select(func.max(run_events.c.id))).scalar_one())
    finally:
        db.close()


def _sse(url: str, token: str, last_id: int) -> bytes:
    """The workspace's stream from the start over SSE, read up to the last event the listener saw."""
    request = urllib.request.Request(  # noqa: S310 (our server)
        url + "/api/v1/events/sse?after=0", headers={"Authorization": f"Bearer {token}"}
    )
    got = b""
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        while f"id: {last_id}\n".encode() not in got:
            line = response.readline()
            assert line, "the SSE stream ended early"
            got += line
    return got


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    if request.param == "sqlite":
        yield tmp_path / "cosmogen-data"
    else:
        yield request.getfixturevalue("clean_pg_url")


def test_no_canary_in_any_answer_frame_or_server_log(
    store: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    monkeypatch.setenv("COSMOGEN_LOG_LEVEL", "debug")
    owner = "owner@example.com"
    args = ["--no-sandbox"] + (["--database-url", store] if isinstance(store, str) else [])
    listener: list[Listener] = []
    with ThreadedSimulator(name=f"lk{secrets.token_hex(12)}") as sim:
        c = _canaries(sim)
        c["basic_password"] = c.pop("password")
        for name in ("password", "new_password", "member_password"):
            c[name] = f"Pa55-w0rd-{secrets.token_hex(16)}"
        with serving(tmp_path, *args) as (url, _):
            _owner(store, owner, c["password"])
            client = Client(url)
            try:
                _scenario(client, sim, c, owner, listener)
                last = _last_event(store)
                deadline = time.monotonic() + 30
                while not listener[0].frames or json.loads(listener[0].frames[-1])["id"] != last:
                    assert time.monotonic() < deadline, "the listener did not get every event"
                    time.sleep(0.05)
            finally:
                if listener:
                    listener[0].stop.set()
                    listener[0].join(10)
            frames = listener[0].frames
            assert listener[0].error is None, listener[0].error
            sse = _sse(url, c["api_token"], last)
            seen = [json.loads(f)["id"] for f in frames]
            assert seen == sorted(set(seen)) and seen == [
                int(i) for i in re.findall(rb"^id: (\d+)$", sse, re.M)
            ]
        issued = [t for f in sim.oauth.families.values() for t in (*f.access_tokens, *f.refresh_tokens)]
    server_log = (tmp_path / "serve.log").read_bytes()

    for index, value in enumerate(issued):
        c[f"issued {index}"] = value
    assert len(issued) >= 4, "the authorization server issued too few tokens (no refresh?)"
    needles = {name: value.encode() for name, value in c.items()}
    bodies = _bodies(c)
    surfaces = {f"{i}: {where}": text for i, (where, text) in enumerate(client.answers)}
    surfaces.update({"websocket frames": "\n".join(frames).encode(), "sse": sse, "server log": server_log})
    types = {json.loads(f)["type"] for f in frames}
    assert {"account.error", "run.succeeded"} <= types, types
    assert b'"level": "debug"' in server_log, "the server logged no DEBUG record: is the level on?"
    assert b"login failed for nobody@example.com" in server_log and b"invalid_grant" in server_log
    assert len(client.answers) > 60
    for where, text in client.answers:  # a crash answers a generic message and a correlation id only
        if where.endswith("-> 500"):
            problem = json.loads(text.split(b"\n\n", 1)[1])  # after the status line and headers
            assert set(problem) <= {"type", "title", "status", "code", "detail", "correlation_id"}, where
    leaks = _scan(surfaces, needles, bodies)
    assert leaks == [], "\n".join(leaks)
    for shows, where, text in client.shown_once:
        names = shows.split()
        assert all(c[name].encode() in text for name in names), where  # there, once, by design
        assert _scan({where: text}, _without(needles, names), _without(bodies, names)) == []
    # The search does look where the data is: a piece of a canary planted in a surface is found.
    for where in ("websocket frames", "sse", "server log", next(iter(surfaces))):
        for name in ("api_token", "session", "issued 0", "openai"):
            planted = surfaces[where] + b" " + bodies[name][3:15]
            assert _scan({where: planted}, needles, bodies), (where, name)
