"""PBT-04 (authorization differential): random worlds and request sequences, an oracle against the API.

Each example is a fresh world: 2-3 workspaces, 3-5 users, each with no role, viewer, editor or admin in
each workspace (every workspace keeps an admin, as the store requires), an API token per membership, and
per workspace a universe with two versions, a run, a live launch and an account. Then 5-25 requests,
each (user, the workspace whose token they use, action, target): reads and changes of every object kind,
member role changes and removals, adding members, minting lower tokens and revoking tokens.

The oracle `may` below is written from the documented rules (docs/api.md, docs/accounts-api.md,
docs/security.md "API tokens" and "Members"), not from our code: no credential, a revoked token or a
removed membership is 401; a token acts with the lesser of its own role and its user's current role; a
role below the action's is 403; an object of another workspace, a removed account, a token of someone
else (to a non-admin) or a user who is not a member answers 404; the last admin can be neither demoted
nor removed (409). It keeps its own model of memberships and tokens as the accepted changes go through,
and checks `GET /me`, `GET /members`, `GET /tokens` and the lists against it. 500 examples per dialect,
0 disagreements.

The app is `create_app` driven over ASGI in this process (no socket), with its real lifespan: the
runtime, its writer, workers and event feed all run. A world is reset by making new ids, not by
truncating: another example's objects are just another workspace's, which the oracle expects as 404.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Message
from tests.conftest import DIALECTS
from tests.reliability.api_walk import FAILING, failing_v2

from cosmogen.api.app import create_app
from cosmogen.domain.roles import Role
from cosmogen.identity import tokens, users
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import new_key
from cosmogen.runtime.service import Runtime, RuntimeSettings

# --- talking to the app over ASGI ---------------------------------------------------------------------


async def asgi(
    app: FastAPI, method: str, target: str, *, token: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request through the app's ASGI interface; returns (status, headers, JSON body or text)."""
    path, _, query = target.partition("?")
    raw = json.dumps(body).encode() if body is not None else b""
    headers = [(b"host", b"testserver"), (b"content-length", str(len(raw)).encode())]
    if body is not None:
        headers.append((b"content-type", b"application/json"))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }  # fmt: skip
    sent = False
    status = 0
    got: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the app answers
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            got.update((k.decode(), v.decode()) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    content = b"".join(chunks)
    try:
        return status, got, json.loads(content) if content else None
    except ValueError:
        return status, got, content.decode(errors="replace")


# --- the world ----------------------------------------------------------------------------------------

# 500 in CI; the soak sets COSMOGEN_PBT04_EXAMPLES=10000.
EXAMPLES = int(os.environ.get("COSMOGEN_PBT04_EXAMPLES", "500"))
ROLES = ("viewer", "editor", "admin")
RANK = {"viewer": 0, "editor": 1, "admin": 2}  # the oracle's own order (docs/api.md: each includes the lower)


@dataclass(frozen=True)
class Ask:
    user: int
    via: int  # the workspace whose token the user sends
    action: str
    target: int  # a workspace (object actions), a user (member actions) or a token (mod their count)
    role: str = "viewer"  # for role changes, new members and new tokens


# What each action needs (None: any member), and what it acts on.
OBJECT_ACTIONS: dict[str, str] = {
    "get_universe": "viewer", "list_versions": "viewer", "get_version": "viewer", "validation": "viewer",
    "diff": "viewer", "export": "viewer", "universe_metrics": "viewer", "add_version": "editor",
    "set_active": "editor", "archive_universe": "editor", "delete_universe": "admin",
    "start_run": "editor", "create_launch": "editor", "get_run": "viewer", "run_events": "viewer",
    "cancel_run": "editor", "rerun": "editor", "get_launch": "viewer", "pause_launch": "editor",
    "resume_launch": "editor", "launch_run": "editor", "get_account": "viewer", "patch_account": "admin",
    "disable_account": "admin", "delete_account": "admin",
}  # fmt: skip
LIST_ACTIONS: dict[str, str | None] = {
    "list_universes": "viewer", "list_runs": "viewer", "list_launches": "viewer",
    "list_accounts": "viewer", "audit": "admin", "me": None, "list_members": None, "list_tokens": None,
}  # fmt: skip
MEMBER_ACTIONS: dict[str, str | None] = {
    "change_role": "admin", "remove_member": "admin", "add_member": "admin", "mint_token": None,
    "revoke_token": None,
}  # fmt: skip


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[list[str | None]], list[Ask]]:
    n_ws = draw(st.integers(2, 3))
    n_users = draw(st.integers(3, 5))
    role = st.sampled_from((None, *ROLES))
    roles = [[draw(role) for _ in range(n_ws)] for _ in range(n_users)]
    for w in range(n_ws):  # every workspace has an admin (the store never lets the last one go)
        if not any(roles[u][w] == "admin" for u in range(n_users)):
            roles[draw(st.integers(0, n_users - 1))][w] = "admin"
    # Changes of membership and tokens weigh more: they are what moves a caller's rights mid-sequence.
    actions = sorted({*OBJECT_ACTIONS, *LIST_ACTIONS}) + 4 * sorted(MEMBER_ACTIONS)
    asks = []
    for _ in range(draw(st.integers(5, 25))):
        user = draw(st.integers(0, n_users - 1))
        mine = [w for w in range(n_ws) if roles[user][w] is not None]
        # Mostly through a workspace the user started in (else most answers would be 401).
        if mine and draw(st.integers(0, 4)) > 0:
            via = draw(st.sampled_from(mine))
        else:
            via = draw(st.integers(0, n_ws - 1))
        action = draw(st.sampled_from(actions))
        target = via if action in OBJECT_ACTIONS and draw(st.booleans()) else draw(st.integers(0, 63))
        asks.append(Ask(user, via, action, target, draw(st.sampled_from(ROLES))))
    return roles, asks


@dataclass
class Objects:
    universe: str
    name: str
    version_1: str
    version_2: str
    run: str
    launch: str
    account: str


@dataclass
class TokenModel:
    id: str
    secret: str
    user: int
    workspace: int
    role: str
    revoked: bool = False


@dataclass
class Oracle:
    """The documented rules, over a model of who is a member where and which tokens live."""

    workspaces: list[str]
    user_ids: list[str]
    emails: list[str]
    members: dict[tuple[int, int], str]  # (user, workspace) -> role
    tokens: list[TokenModel] = field(default_factory=list)
    holding: dict[tuple[int, int], int] = field(default_factory=dict)  # the token a user sends there
    gone_accounts: set[int] = field(default_factory=set)

    def credential(self, user: int, via: int) -> TokenModel | None:
        held = self.holding.get((user, via))
        return None if held is None else self.tokens[held]

    def acting_role(self, user: int, via: int) -> str | None:
        """None: the request is unauthenticated (no token, revoked, membership gone)."""
        token = self.credential(user, via)
        member = self.members.get((user, via))
        if token is None or token.revoked or member is None:
            return None
        return token.role if RANK[token.role] <= RANK[member] else member

    def admins(self, workspace: int) -> int:
        return sum(1 for (_, w), r in self.members.items() if w == workspace and r == "admin")

    def may(self, ask: Ask) -> int | str:
        """The expected status: 401, 403, 404, an exact success or conflict status, or "ok" (any 2xx)."""
        role = self.acting_role(ask.user, ask.via)
        if role is None:
            return 401
        needed = {**OBJECT_ACTIONS, **LIST_ACTIONS, **MEMBER_ACTIONS}[ask.action]
        if needed is not None and RANK[role] < RANK[needed]:
            return 403
        if ask.action in OBJECT_ACTIONS:
            if ask.target % len(self.workspaces) != ask.via:
                return 404
            if "account" in ask.action and ask.via in self.gone_accounts:
                return 404
            return "ok"
        if ask.action in ("change_role", "remove_member", "add_member"):
            target = ask.target % len(self.user_ids)
            current = self.members.get((target, ask.via))
            if ask.action == "add_member":
                return 409 if current is not None else 201
            if current is None:
                return 404
            demoting = ask.action == "remove_member" or ask.role != "admin"
            if current == "admin" and demoting and self.admins(ask.via) <= 1:
                return 409
            return 200 if ask.action == "change_role" else 204
        if ask.action == "mint_token":
            return 201 if RANK[ask.role] <= RANK[role] else 403
        if ask.action == "revoke_token":
            token = self.tokens[ask.target % len(self.tokens)]
            if token.workspace != ask.via or (token.user != ask.user and role != "admin"):
                return 404
            return 204
        return 200

    def accept(self, ask: Ask, body: Any) -> None:
        """The change an accepted request made, in the model."""
        target = ask.target % len(self.user_ids)
        if ask.action in ("change_role", "add_member"):
            self.members[(target, ask.via)] = ask.role
        elif ask.action == "remove_member":
            del self.members[(target, ask.via)]
            for token in self.tokens:  # removal revokes their tokens in that workspace
                if token.user == target and token.workspace == ask.via:
                    token.revoked = True
        elif ask.action == "mint_token":
            made = TokenModel(body["id"], body["token"], ask.user, ask.via, ask.role)
            self.tokens.append(made)
            self.holding[(ask.user, ask.via)] = len(self.tokens) - 1
        elif ask.action == "revoke_token":
            self.tokens[ask.target % len(self.tokens)].revoked = True
        elif ask.action == "delete_account":
            self.gone_accounts.add(ask.via)


# --- one example ----------------------------------------------------------------------------------------

_serial = itertools.count()


def _document(name: str, second: bool = False) -> dict[str, Any]:
    return {**(failing_v2() if second else FAILING), "name": name}


async def _build(
    app: FastAPI, runtime: Runtime, roles: list[list[str | None]]
) -> tuple[Oracle, list[Objects]]:
    n_ws = len(roles[0])
    serial = next(_serial)
    oracle = Oracle(workspaces=[], user_ids=[], emails=[], members={})
    with runtime.db.engine.begin() as conn:
        for w in range(n_ws):
            oracle.workspaces.append(users.create_workspace(f"w{serial}-{w}")(conn))
        for u, row in enumerate(roles):
            oracle.emails.append(f"u{serial}-{u}@example.com")
            oracle.user_ids.append(users.create_user(oracle.emails[-1], f"u{u}")(conn))
            for w, role in enumerate(row):
                if role is None:
                    continue
                users.add_member(oracle.workspaces[w], oracle.user_ids[u], Role(role))(conn)
                oracle.members[(u, w)] = role
                secret, write = tokens.create_token(
                    user_id=oracle.user_ids[u], workspace_id=oracle.workspaces[w], name="t", role=Role(role)
                )
                oracle.tokens.append(TokenModel(write(conn), secret.reveal(), u, w, role))
                oracle.holding[(u, w)] = len(oracle.tokens) - 1
    objects = []
    for w in range(n_ws):
        admin = next(t.secret for t in oracle.tokens if t.workspace == w and t.role == "admin")
        objects.append(await _seed(app, admin, f"u{serial}-{w}"))
    return oracle, objects


async def _seed(app: FastAPI, token: str, name: str) -> Objects:
    async def made(method: str, path: str, body: Any) -> Any:
        status, _, out = await asgi(app, method, "/api/v1" + path, token=token, body=body)
        assert status == 201, (path, out)
        return out

    saved = await made("POST", "/universes", {"document": _document(name)})
    universe = saved["universe"]["id"]
    second = await made("POST", f"/universes/{universe}/versions", {"document": _document(name, True)})
    run = await made("POST", "/runs", {"version_id": saved["version"]["id"]})
    launch = await made("POST", "/launches", {"universe_id": universe})
    account = await made("POST", "/accounts", {
        "name": f"acct-{name}", "provider": "openai", "base_url": "http://127.0.0.1:9",
        "secrets": {"api_key": "sk-test-" + secrets.token_hex(8)}, "test": False,
    })  # fmt: skip
    return Objects(
        universe, name, saved["version"]["id"], second["version"]["id"], run["run_id"], launch["id"],
        account["id"],
    )  # fmt: skip


def _request(ask: Ask, oracle: Oracle, objects: list[Objects]) -> tuple[str, str, Any]:
    """(method, path, body) of an ask; object actions name the target workspace's objects."""
    o = objects[ask.target % len(objects)]
    user = oracle.user_ids[ask.target % len(oracle.user_ids)]
    table: dict[str, tuple[str, str, Any]] = {
        "get_universe": ("GET", f"/universes/{o.universe}", None),
        "list_versions": ("GET", f"/universes/{o.universe}/versions", None),
        "get_version": ("GET", f"/versions/{o.version_2}", None),
        "validation": ("GET", f"/versions/{o.version_1}/validation", None),
        "diff": ("GET", f"/universes/{o.universe}/diff?from={o.version_1}&to={o.version_2}", None),
        "export": ("GET", f"/universes/{o.universe}/export?version_id={o.version_1}", None),
        "universe_metrics": ("GET", f"/universes/{o.universe}/metrics", None),
        "add_version": ("POST", f"/universes/{o.universe}/versions", {"document": _document(o.name)}),
        "set_active": ("PUT", f"/universes/{o.universe}/active", {"version_id": o.version_1}),
        "archive_universe": ("POST", f"/universes/{o.universe}/archive", None),
        "delete_universe": ("DELETE", f"/universes/{o.universe}", None),  # the first step: 409 + token
        "start_run": ("POST", "/runs", {"universe_id": o.universe}),
        "create_launch": ("POST", "/launches", {"version_id": o.version_1, "live": False}),
        "get_run": ("GET", f"/runs/{o.run}", None),
        "run_events": ("GET", f"/runs/{o.run}/events", None),
        "cancel_run": ("POST", f"/runs/{o.run}/cancel", None),
        "rerun": ("POST", f"/runs/{o.run}/rerun", None),
        "get_launch": ("GET", f"/launches/{o.launch}", None),
        "pause_launch": ("POST", f"/launches/{o.launch}/pause", None),
        "resume_launch": ("POST", f"/launches/{o.launch}/resume", None),
        "launch_run": ("POST", f"/launches/{o.launch}/runs", {}),
        "get_account": ("GET", f"/accounts/{o.account}", None),
        "patch_account": ("PATCH", f"/accounts/{o.account}", {"tier": "sandbox"}),
        "disable_account": ("POST", f"/accounts/{o.account}/disable", None),
        "delete_account": ("DELETE", f"/accounts/{o.account}", None),
        "list_universes": ("GET", "/universes", None),
        "list_runs": ("GET", "/runs", None),
        "list_launches": ("GET", "/launches", None),
        "list_accounts": ("GET", "/accounts", None),
        "audit": ("GET", "/audit", None),
        "me": ("GET", "/me", None),
        "list_members": ("GET", "/members", None),
        "list_tokens": ("GET", "/tokens", None),
        "change_role": ("PATCH", f"/members/{user}", {"role": ask.role}),
        "remove_member": ("DELETE", f"/members/{user}", None),
        "add_member": (
            "POST",
            "/members",
            {"email": oracle.emails[ask.target % len(oracle.emails)], "role": ask.role},
        ),
        "mint_token": ("POST", "/tokens", {"name": "pbt", "role": ask.role}),
        "revoke_token": ("DELETE", f"/tokens/{oracle.tokens[ask.target % len(oracle.tokens)].id}", None),
    }
    method, path, body = table[ask.action]
    return method, "/api/v1" + path, body


def _agrees(expected: int | str, status: int) -> bool:
    if expected == "ok":
        return 200 <= status < 300 or status in (409, 422)  # past authorization; a state rule may refuse
    return status == expected


def _check_view(ask: Ask, oracle: Oracle, objects: list[Objects], body: Any) -> None:
    """What an allowed read shows agrees with the model, and holds nothing of another workspace."""
    others = [o for w, o in enumerate(objects) if w != ask.via]
    foreign = {i for o in others for i in (o.universe, o.version_1, o.version_2, o.run, o.launch, o.account)}
    text = json.dumps(body)
    assert not [i for i in foreign if i in text], (ask, "another workspace's ids in the answer")
    members = {oracle.user_ids[u]: r for (u, w), r in oracle.members.items() if w == ask.via}
    if ask.action == "me":
        expected = (
            oracle.user_ids[ask.user],
            oracle.workspaces[ask.via],
            oracle.acting_role(ask.user, ask.via),
        )
        assert (body["user_id"], body["workspace_id"], body["role"]) == expected, (ask, body)
    elif ask.action == "list_members":
        assert {m["user_id"]: m["role"] for m in body} == members, (ask, body)
    elif ask.action == "list_tokens":
        admin = oracle.acting_role(ask.user, ask.via) == "admin"
        seen = {t.id for t in oracle.tokens if t.workspace == ask.via and (admin or t.user == ask.user)}
        assert {t["id"] for t in body} == seen, (ask, body)


async def _example(
    app: FastAPI, runtime: Runtime, roles: list[list[str | None]], asks: list[Ask], outcomes: dict[str, int]
) -> None:
    oracle, objects = await _build(app, runtime, roles)
    for ask in asks:
        expected = oracle.may(ask)
        method, path, body = _request(ask, oracle, objects)
        credential = oracle.credential(ask.user, ask.via)
        # A user who never had a token there sends one that was never issued.
        token = credential.secret if credential else "cg_" + secrets.token_urlsafe(32)
        status, _, answer = await asgi(app, method, path, token=token, body=body)
        assert status < 500, (ask, status, answer)
        assert _agrees(expected, status), (ask, f"expected {expected}, got {status}", answer)
        outcomes[str(status)] = outcomes.get(str(status), 0) + 1
        if status < 300:
            oracle.accept(ask, answer)
            if method == "GET":
                _check_view(ask, oracle, objects, answer)


# --- the test -------------------------------------------------------------------------------------------


@pytest.fixture(params=DIALECTS)
def runtime_settings(request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeSettings:
    settings_ = RuntimeSettings(poll_interval_s=0.05)
    if request.param == "sqlite":
        return replace(settings_, data_dir=tmp_path / "data")
    ring = {"active": "k1", "keys": {"k1": base64.b64encode(new_key()).decode()}}
    url = request.getfixturevalue("clean_pg_url")
    return replace(settings_, database_url=url, vault_keys=Secret(json.dumps(ring)))


@pytest.fixture
def served_app(runtime_settings: RuntimeSettings) -> Iterator[tuple[asyncio.Runner, FastAPI, Runtime]]:
    """The app with its lifespan entered, on one event loop every example runs on."""
    with asyncio.Runner() as runner:
        holder: dict[str, Runtime] = {}

        async def opened() -> Runtime:
            holder["runtime"] = await Runtime.open(runtime_settings)
            return holder["runtime"]

        app = create_app(opened)
        lifespan = app.router.lifespan_context(app)
        runner.run(lifespan.__aenter__())
        try:
            yield runner, app, holder["runtime"]
        finally:
            runner.run(lifespan.__aexit__(None, None, None))


def test_pbt04_authorization_differential(served_app: tuple[asyncio.Runner, FastAPI, Runtime]) -> None:
    runner, app, runtime = served_app
    seen: dict[str, int] = {}
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
    )
    @given(worlds())
    def check(world: tuple[list[list[str | None]], list[Ask]]) -> None:
        roles, asks = world
        runner.run(_example(app, runtime, roles, asks, outcomes))
        for ask in asks:
            seen[ask.action] = seen.get(ask.action, 0) + 1

    check()
    assert set(seen) == {*OBJECT_ACTIONS, *LIST_ACTIONS, *MEMBER_ACTIONS}, "an action was never tried"
    print(f"PBT-04: {sum(seen.values())} requests, statuses {dict(sorted(outcomes.items()))}")
    # Every kind of answer was predicted and seen, not just one.
    for status in ("200", "201", "204", "401", "403", "404", "409"):
        assert outcomes.get(status, 0) >= 20, (status, outcomes)
