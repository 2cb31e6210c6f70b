"""OA-07: the refresh window, and a provider that gives no expiry (both dialects).

- Frozen clock around the stored expiry T: no refresh at T-5:01, a refresh at T-4:59.
- No `expires_in` (the simulator leaves it out): the token is never refreshed ahead; when the provider
  refuses it (X answers 401), the executor refreshes once and retries once, and the run succeeds.
- Never a loop: a provider that refuses every token (Slack's 200 `token_expired`, scripted) costs exactly
  1 refresh and 1 retry, then the run fails with the provider's answer and what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.integration.runtime.test_runtime import with_runtime
from tests.reliability.token_support import LOOPBACK, Store, started_http, store

from cosmogen.cli.durable import report
from cosmogen.domain.runs import RunStatus
from cosmogen.domain.tokens import RefreshPolicy
from cosmogen.integrations.accounts import VaultOpener
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.tokens import TokenManager
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import effects
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    Fault,
    Simulator,
    ThreadedSimulator,
)

__all__ = ["store"]  # the fixture

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_oa07_no_refresh_at_t_minus_5_01_a_refresh_at_t_minus_4_59(store: Store) -> None:
    clock = {"now": T - timedelta(minutes=5, seconds=1)}

    async def main() -> None:
        async with Simulator() as sim:
            grant = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
            account_id = oauth_accounts.connect(
                store.db, store.vault, sim_url=sim.url, client_id=DEFAULT_CLIENT_ID,
                client_secret=DEFAULT_CLIENT_SECRET, access_token=grant.access_token,
                refresh_token=grant.refresh_token, expires_at=T,
            )  # fmt: skip
            http = await started_http()
            tokens = TokenManager(
                store.db,
                VaultOpener(lambda: store.vault),
                http,
                policy=RefreshPolicy(),
                now=lambda: clock["now"],
            )
            try:
                early = await tokens.access_token(account_id)
                assert early.reveal() == grant.access_token and sim.counts["oauth.token"] == 0
                clock["now"] = T - timedelta(minutes=4, seconds=59)
                due = await tokens.access_token(account_id)
                assert due.reveal() != grant.access_token and sim.counts["oauth.token"] == 1
                again = await tokens.access_token(account_id)  # fresh now: T-4:59 + 3600 s
                assert again == due and sim.counts["oauth.token"] == 1
            finally:
                await tokens.close()
                await http.close()
            saved = oauth_accounts.stored(store.db, store.vault, account_id)
            assert saved.token_expires_at == clock["now"] + timedelta(seconds=3600)
            assert saved.access_token == due.reveal()

    asyncio.run(main())


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeSettings:
    base = RuntimeSettings(egress=LOOPBACK, poll_interval_s=0.05)
    if request.param == "sqlite":
        return replace(base, data_dir=tmp_path / "data")
    keyring = Secret(oauth_accounts.new_keyring())  # PostgreSQL: the keyring from the environment
    return replace(base, database_url=request.getfixturevalue("clean_pg_url"), vault_keys=keyring)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator(expires_in=None) as server:  # token answers carry no expires_in
        yield server


def universe(capability: str, account: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": "no expiry",
        "nodes": [
            {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "launch"}},
            {"id": "s", "type": "become", "entity": "post:1", "transform": {"sent": "true"}},
        ],
        "edges": [{"source": "b", "target": "s"}],
        "bindings": [
            {
                "id": "post",
                "node": "s",
                "kind": "provider",
                "capability": capability,
                "account": account,
                "settings": settings,
            }
        ],
    }


def run_once(
    settings: RuntimeSettings,
    sim: Simulator,
    provider: str,
    scopes: tuple[str, ...],
    document: dict[str, Any],
) -> tuple[dict[str, Any], list[str], Any, oauth_accounts.StoredAccount]:
    async def body(runtime: Runtime) -> tuple[dict[str, Any], list[str], Any, oauth_accounts.StoredAccount]:
        grant = sim.oauth.issue(DEFAULT_CLIENT_ID, " ".join(scopes))
        assert grant.expires_in is None
        vault = runtime.open_vault()
        account_id = oauth_accounts.connect(
            runtime.db, vault, sim_url=sim.url, client_id=DEFAULT_CLIENT_ID,
            client_secret=DEFAULT_CLIENT_SECRET, access_token=grant.access_token,
            refresh_token=grant.refresh_token, expires_at=None, name="brand", provider=provider,
            scopes=scopes,
        )  # fmt: skip
        sim.oauth.expire(grant.access_token)  # the provider now refuses it; we cannot know when it would
        submitted = await runtime.submit(document)
        await runtime.wait(submitted.run_id)
        with runtime.db.engine.connect() as conn:
            names = [r.binding_id for r in conn.execute(select(effects.c.binding_id).order_by(effects.c.id))]
        return (
            report(runtime.db, submitted.run_id),
            names,
            grant,
            oauth_accounts.stored(runtime.db, vault, account_id),
        )

    return with_runtime(settings, body)


X_SCOPES = ("tweet.read", "tweet.write", "users.read")


def test_oa07_without_expiry_a_401_costs_one_refresh_and_one_retry(
    settings: RuntimeSettings, sim: Simulator
) -> None:
    document = universe("x.post", "brand", {"text": "Launch day {{ topic }}"})
    result, names, grant, saved = run_once(settings, sim, "x", X_SCOPES, document)
    assert result["status"] == RunStatus.SUCCEEDED.value, result["error"]
    assert sim.counts["oauth.token"] == 1
    first, second = sim.log.select("x.tweets")
    assert (first.status, first.credential) == (401, grant.access_token)
    assert second.status in (200, 201) and second.credential == saved.access_token != grant.access_token
    assert names == ["post", "post.reauth"]  # the retry is journaled as an effect of its own
    assert saved.status == "connected" and saved.token_expires_at is None  # still no expiry known


def test_oa07_a_provider_that_keeps_refusing_gets_one_refresh_and_one_retry_never_a_loop(
    settings: RuntimeSettings, sim: Simulator
) -> None:
    sim.inject(Fault.token_expired(), "slack.postMessage", times=None)
    document = universe("slack.post_message", "brand", {"channel": "C0SIM00001", "text": "hi"})
    result, names, grant, saved = run_once(settings, sim, "slack", ("chat:write",), document)
    assert result["status"] == RunStatus.FAILED.value
    assert sim.counts["oauth.token"] == 1
    assert sim.counts["slack.postMessage"] == 2
    assert names == ["post", "post.reauth"]
    error = result["outputs"]["s"]["bindings"]["post"]["error"]
    assert (error["code"], error["action"]) == ("slack.token_expired", "reconnect")
    # Refused even with a fresh token: the account goes to `error` (seed-spec §2.2), so the next run
    # says "reconnect" at once instead of refreshing and calling again.
    assert saved.access_token != grant.access_token and saved.status == "error"
