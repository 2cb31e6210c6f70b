"""Shared by the OAuth connect/disconnect tests: a migrated database on each dialect with a vault and a
writer, provider simulators as authorization servers, and the three steps a browser would take
(follow the authorization URL, read the redirect, deliver it to the callback). Nothing is mocked: the
flow runs against real databases and the simulator over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import select

from cosmogen.domain.capabilities import Registry, default_registry
from cosmogen.domain.oauth import requested_scopes
from cosmogen.integrations import keystore
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.oauth_flow import (
    AuthorizationResponse,
    Connected,
    ConnectRequest,
    ConnectStarted,
    complete_connect,
    start_connect,
)
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import KeySource, Vault
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.tables import accounts, utcnow
from cosmogen.testing.simulator import Simulator
from tests.conftest import DIALECTS, truncate_all

T = TypeVar("T")
SESSION = "browser-session-of-the-person-0123456789"
CLIENT_ID = "studio-app"
CLIENT_SECRET = "cs-studio-app-secret-4f1e9a7b2c"  # noqa: S105 - the test's own fake secret


def redirect_uri(provider: str) -> str:
    # Distinct per provider, as RFC 9207 §1 suggests for clients of several servers.
    return f"http://127.0.0.1:8420/oauth/callback/{provider}"


@pytest.fixture(params=DIALECTS)
def oauth_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database.open(data_dir=tmp_path / "data")
        migrate.upgrade(database)
    else:
        database = Database.open(url=request.getfixturevalue("pg_url"))
        truncate_all(database)
    try:
        yield database
    finally:
        database.close()


def run(coro_fn: Callable[[HttpClient], Awaitable[T]]) -> T:
    """Run `coro_fn(http)` with an HttpClient whose egress allowlist lets it reach the simulators only."""

    async def main() -> T:
        http = HttpClient(EgressPolicy.from_strings("127.0.0.1/32"))
        await http.start()
        try:
            return await coro_fn(http)
        finally:
            await http.close()

    return asyncio.run(main())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def follow_authorization(url: str) -> tuple[str, dict[str, str]]:
    """What a browser does with the authorization URL: GET it; the simulator approves at once and
    redirects. Returns the redirect's Location and its query."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(url, timeout=10)
    except urllib.error.HTTPError as exc:
        if exc.code != 302:
            raise AssertionError(f"the authorization server answered {exc.code}: {exc.read()!r}") from None
        location = exc.headers["Location"]
        return location, dict(parse_qsl(urlsplit(location).query))
    raise AssertionError("the authorization server did not redirect")


def sim_settings(sim: Simulator, *, issuer: bool = True, revoke: bool = True) -> dict[str, Any]:
    oauth: dict[str, Any] = {
        "authorize_url": f"{sim.url}/oauth/authorize",
        "token_url": f"{sim.url}/oauth/token",
    }
    if revoke:
        oauth["revoke_url"] = f"{sim.url}/oauth/revoke"
    if issuer:
        oauth["issuer"] = sim.url
    return {"oauth": oauth}


@dataclass
class Env:
    db: Database
    writer: GroupCommitWriter
    vault: Vault
    registry: Registry = field(default_factory=default_registry)
    clock: list[datetime] = field(default_factory=list)  # empty: the real clock

    def now(self) -> datetime:
        return self.clock[-1] if self.clock else utcnow()

    def start(
        self,
        sim: Simulator,
        name: str = "team",
        provider: str = "slack",
        *,
        session: str = SESSION,
        settings: Mapping[str, Any] | None = None,
        client_secret: str | None = CLIENT_SECRET,
    ) -> tuple[ConnectStarted, str]:
        sim.oauth.register_client(CLIENT_ID, client_secret, [redirect_uri(provider)])
        target = self.registry.providers[provider]
        request = ConnectRequest(
            workspace="default",
            name=name,
            provider=target,
            client_id=CLIENT_ID,
            client_secret=Secret(client_secret) if client_secret else None,
            settings=dict(settings if settings is not None else sim_settings(sim)),
            scopes=requested_scopes(self.registry, provider, ("extra.scope",) if provider == "http" else ()),
            redirect_uri=redirect_uri(provider),
            session=session,
            base_url=sim.url,
        )
        write, state = start_connect(self.vault, request, self.now)
        return self.writer.submit(write).result(), state

    def complete(
        self,
        query: Mapping[str, str],
        *,
        provider: str = "slack",
        session: str = SESSION,
        at: str | None = None,
    ) -> Connected:
        response = AuthorizationResponse.from_query(
            query, provider=provider, redirect_uri=at or redirect_uri(provider)
        )
        return run(
            lambda http: complete_connect(
                self.writer, self.vault, http, self.registry, response, session=session, now=self.now
            )
        )

    def connect(self, sim: Simulator, name: str = "team", provider: str = "slack", **kw: Any) -> Connected:
        started, _ = self.start(sim, name, provider, **kw)
        _, query = follow_authorization(started.authorization_url)
        return self.complete(query, provider=provider)

    def account(self, name: str = "team") -> Any:
        with self.db.engine.connect() as conn:
            return conn.execute(select(accounts).where(accounts.c.name == name)).one()


@pytest.fixture
def env(oauth_db: Database, tmp_path: Path) -> Iterator[Env]:
    vault = keystore.open_vault(oauth_db, KeySource.for_data_dir(tmp_path / "keys"))
    writer = GroupCommitWriter(oauth_db)
    try:
        yield Env(oauth_db, writer, vault)
    finally:
        writer.close()
