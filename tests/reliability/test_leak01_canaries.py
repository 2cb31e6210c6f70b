"""LEAK-01 (the integrations part): canary secrets of every kind the runtime holds go through successful
calls and through failures, and none of them shows up anywhere we can capture.

Canaries (Part D.3): an OpenAI key, an Anthropic key, an X bearer token, a Graph-style token (sent in the
body, as Instagram's API takes it), a basic-auth password, an OAuth client secret, and the access and
refresh tokens the simulator's authorization server issues (its name carries a random core, so every
token it mints is a canary too). The failures: providers answering 401 and 500 with our credentials
echoed in the body (`Fault.echo_auth`), retries of those 500s, a provider refusing a token so that it is
refreshed, and a token endpoint answering `invalid_grant`. The root logger and every library logger run at
DEBUG (SQLAlchemy's engine at INFO: statements and parameters).

Captured: every log record (message, arguments and traceback), stdout and stderr, every run's report and
event log, the accounts as listed, and, on SQLite, the raw database and WAL files and the vault's key
file is checked the other way round (its keys appear nowhere). 0 hits in raw, hex, base64, base64url and
percent-encoded form, nor of any 12-character piece of a canary's random core.

API answers and headers, /openapi.json, metrics and the served process's log: test_leak01_api.py;
WebSocket frames of this scenario: test_leak01_event_stream.py.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from tests.integration.runtime.test_runtime import with_runtime

from cosmogen.cli.durable import report
from cosmogen.integrations import credentials
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import KeySource, new_key
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import accounts, utcnow
from cosmogen.testing.canaries import hits
from cosmogen.testing.simulator import Fault, Simulator, ThreadedSimulator

CLIENT_ID = "leak-client"
_CORE = re.compile(rb"[0-9a-f]{24,}")


class _Capture(logging.Handler):
    """Every record, formatted the way a careless handler would: message, args and traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = [record.name, record.getMessage(), repr(record.args)]
        if record.exc_info:
            text.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            text.append(record.stack_info)
        self.lines.append(" ".join(text))


@pytest.fixture
def captured_logs() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    levels = {
        name: logging.getLogger(name).level
        for name in ("", "aiohttp", "asyncio", "cosmogen", "procrastinate")
    }
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    engine = logging.getLogger("sqlalchemy.engine")
    engine_level = engine.level
    engine.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        engine.setLevel(engine_level)


def _canaries(sim: Simulator) -> dict[str, str]:
    def core() -> str:
        return secrets.token_hex(16)

    return {
        "openai": f"sk-proj-{core()}",
        "anthropic": f"sk-ant-api03-{core()}",
        "x_bearer": f"AAAAAAAAAAAAAAAAAAAAA{core()}",
        "graph_token": f"EAAB{core()}",
        "password": f"Pa55w0rd-{core()}",
        "client_secret": f"GOCSPX-{core()}",
    }


def _universe(*bindings: dict[str, Any]) -> dict[str, Any]:
    nodes = [{"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "launch"}}]
    edges = []
    for index, binding in enumerate(bindings):
        node = f"n{index}"
        nodes.append({"id": node, "type": "become", "entity": "post:1", "transform": {f"s{index}": "true"}})
        edges.append({"source": nodes[-2]["id"], "target": node})
        binding["node"] = node
        binding.setdefault("on_error", "continue")
    return {
        "cosmogen": "universe/1",
        "name": "leak",
        "nodes": nodes,
        "edges": edges,
        "bindings": list(bindings),
    }


def _binding(binding_id: str, capability: str, account: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": binding_id,
        "kind": "provider",
        "capability": capability,
        "account": account,
        "settings": settings,
    }


CHAT = ("openai.chat", "openai-main", {"prompt": "hello", "max_tokens": 5})
CLAUDE = ("anthropic.messages", "anthropic-main", {"prompt": "hello", "max_tokens": 5})
SLACK = ("slack.post_message", "team-slack", {"channel": "C0SIM00001", "text": "hi"})
TWEET = ("x.post", "x-main", {"text": "hello"})
INSTAGRAM = (
    "instagram.publish_image",
    "ig-main",
    {"ig_user_id": "17841400000000001", "image_url": "https://example.com/a.png", "caption": "hi"},
)
WIKI = ("http.request", "wiki", {"method": "POST", "path": "/webhook/pages", "body": {"title": "hi"}})


async def _accounts(runtime: Runtime, sim: Simulator, canaries: dict[str, str]) -> dict[str, str]:
    """Saves every account; returns the OAuth tokens the authorization server issued (canaries too)."""
    vault = runtime.open_vault()

    async def add(name: str, provider: str, auth: str, values: dict[str, str], **extra: Any) -> str:
        account_id = await runtime.writer.write(
            credentials.create_account(
                workspace_id="default", provider=provider, name=name, auth_kind=auth, **extra
            )
        )
        await runtime.writer.write(
            credentials.put_secrets(vault, account_id, {k: Secret(v) for k, v in values.items()})
        )
        await runtime.writer.write(credentials.set_account_status(account_id, "connected"))
        return account_id

    await add("openai-main", "openai", "api_key", {"api_key": canaries["openai"]}, base_url=sim.url)
    await add("anthropic-main", "anthropic", "api_key", {"api_key": canaries["anthropic"]}, base_url=sim.url)
    x_scopes = ["tweet.read", "tweet.write", "users.read"]
    ig_scopes = ["instagram_basic", "instagram_content_publish"]
    x_token = {"access_token": canaries["x_bearer"]}
    await add("x-main", "x", "oauth2", x_token, base_url=sim.url, scopes=x_scopes)
    ig_url = f"{sim.url}/v21.0"
    await add("ig-main", "instagram", "oauth2", {"access_token": canaries["graph_token"]}, base_url=ig_url,
              scopes=ig_scopes)  # fmt: skip
    await add(
        "wiki", "http", "basic", {"username": "bot", "password": canaries["password"]}, base_url=sim.url
    )
    sim.oauth.register_client(CLIENT_ID, canaries["client_secret"])
    tokens = sim.oauth.issue(CLIENT_ID, "chat:write")
    assert tokens.refresh_token is not None
    oauth = {
        "client_id": CLIENT_ID,
        "authorize_url": f"{sim.url}/oauth/authorize",
        "token_url": f"{sim.url}/oauth/token",
        "revoke_url": f"{sim.url}/oauth/revoke",
    }
    slack = await add(
        "team-slack", "slack", "oauth2",
        {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
         "client_secret": canaries["client_secret"]},
        base_url=sim.url, scopes=["chat:write"], settings={"oauth": oauth},
    )  # fmt: skip
    with runtime.db.engine.begin() as conn:  # due: inside the 5-minute window, so the first use refreshes
        conn.execute(
            update(accounts)
            .where(accounts.c.id == slack)
            .values(token_expires_at=utcnow() + timedelta(minutes=2))
        )
    return {"issued_access": tokens.access_token, "issued_refresh": tokens.refresh_token}


async def _scenario(runtime: Runtime, sim: Simulator, canaries: dict[str, str]) -> list[str]:
    """Every call kind, then every failure; returns what the runs and their events show, as text."""
    issued = await _accounts(runtime, sim, canaries)
    canaries.update(issued)
    shown: list[str] = []

    async def run(*calls: tuple[str, str, dict[str, Any]]) -> None:
        bindings = [_binding(f"b{i}", *call) for i, call in enumerate(calls)]
        submitted = await runtime.submit(_universe(*bindings))
        await runtime.wait(submitted.run_id)
        shown.append(json.dumps(report(runtime.db, submitted.run_id), default=str))
        with runtime.db.engine.connect() as conn:
            shown.append(json.dumps(journal.events_of(conn, submitted.run_id), default=str))

    # Successes: the Slack call refreshes its token first (client secret and refresh token go out).
    await run(CHAT, CLAUDE, SLACK, TWEET, INSTAGRAM, WIKI)
    # Providers that echo our credentials back, as a refusal and as a retried server error.
    for target in ("openai.chat", "anthropic.messages", "x.tweets", "instagram.media", "webhook"):
        sim.inject(Fault.echo_auth(), target)
    await run(CHAT, CLAUDE, TWEET, INSTAGRAM, WIKI)
    sim.inject(Fault("echo_auth", status=500), "openai.chat", times=4)
    await run(CHAT)
    # A refused Slack token is refreshed once; the token endpoint then says invalid_grant: needs reauth.
    sim.inject(Fault.token_expired(), "slack.postMessage", times=2)
    sim.inject(Fault.invalid_grant(), "oauth.token")
    await run(SLACK)
    with runtime.db.engine.connect() as conn:
        listed = conn.execute(select(accounts)).mappings().all()
    shown.append(json.dumps([dict(row) for row in listed], default=str))
    assert sim.log.select("oauth.token"), "the scenario never reached the token endpoint"
    assert any(e.status == 401 for e in sim.log.select("openai.chat")), "the echo fault never fired"
    return shown


def _needles(canaries: dict[str, str], keys: list[bytes]) -> dict[str, bytes]:
    found = {name: value.encode() for name, value in canaries.items()}
    for index, key in enumerate(keys):
        found[f"vault key {index}"] = key
    return found


def _cores(needles: dict[str, bytes]) -> dict[str, bytes]:
    """The random part of each canary: any 12-character piece of it is a leak."""
    return {f"{name} core": core for name, value in needles.items() for core in _CORE.findall(value)}


def _scan(surfaces: dict[str, bytes], needles: dict[str, bytes]) -> list[str]:
    cores = _cores(needles)
    leaks = []
    for where, blob in surfaces.items():
        for hit in hits(blob, needles) + hits(blob, cores, substrings=True):
            leaks.append(f"{where}: {hit}")
    return leaks


def _vault_keys(settings: RuntimeSettings) -> list[bytes]:
    source = KeySource.for_data_dir(settings.data_dir or Path("/nonexistent"), settings.vault_keys)
    ring = source.load()
    assert ring is not None, "the scenario never opened the vault"
    return list(ring.keys.values())


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_no_canary_anywhere(
    dialect: str, tmp_path: Path, captured_logs: _Capture, capfd: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    settings = RuntimeSettings(
        egress=EgressPolicy.from_strings(networks="127.0.0.1/32"), poll_interval_s=0.05
    )
    if dialect == "sqlite":
        settings = replace(settings, data_dir=tmp_path / "data")
    else:
        ring = {"active": "k1", "keys": {"k1": base64.b64encode(new_key()).decode()}}
        settings = replace(
            settings,
            database_url=request.getfixturevalue("clean_pg_url"),
            vault_keys=Secret(json.dumps(ring)),
        )
    core = secrets.token_hex(12)
    with ThreadedSimulator(name=f"lk{core}") as sim:
        canaries = _canaries(sim)
        sim.api_keys.update(
            {canaries["openai"], canaries["anthropic"], canaries["x_bearer"], canaries["graph_token"]}
        )
        shown = with_runtime(settings, lambda runtime: _scenario(runtime, sim, canaries))
    out, err = capfd.readouterr()
    surfaces = {
        "logs": "\n".join(captured_logs.lines).encode(),
        "stdout": out.encode(),
        "stderr": err.encode(),
        "runs and events": "\n".join(shown).encode(),
    }
    if dialect == "sqlite":
        assert settings.data_dir is not None
        for path in sorted(settings.data_dir.glob("*.db*")):
            surfaces[path.name] = path.read_bytes()
    keys = _vault_keys(settings)
    needles = _needles(canaries, keys)
    assert len(captured_logs.lines) > 100, "the loggers captured almost nothing: is DEBUG on?"
    assert _scan(surfaces, needles) == []
    # The search does look where the data is: a canary planted in each surface is found.
    for where, blob in surfaces.items():
        planted = blob + b" " + canaries["openai"].encode()[:20]
        assert _scan({where: planted}, needles), where
