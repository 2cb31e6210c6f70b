"""The background refresher that the runtime starts (serve's polling on SQLite, the worker on PostgreSQL)
and the token manager's secrecy, against the provider simulator on both dialects.

- An idle account whose token is due is refreshed with no caller asking, once; accounts that are not
  due, have no refresh token, are disabled or wait out a backoff are left alone (no call).
- A token endpoint that echoes the refresh token in its error description: the error raised, the
  account's last_error and every log record carry no token or client secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from cosmogen.domain.tokens import RefreshPolicy
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.secret import Secret
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import accounts, utcnow
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    Fault,
    Simulator,
    ThreadedSimulator,
)
from tests.integration.runtime.test_runtime import with_runtime
from tests.reliability.token_support import LOOPBACK

QUICK = RefreshPolicy(refresher_every=timedelta(milliseconds=200))


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeSettings:
    base = RuntimeSettings(egress=LOOPBACK, poll_interval_s=0.05, token_refresh=QUICK)
    if request.param == "sqlite":
        return replace(base, data_dir=tmp_path / "data")
    keyring = Secret(oauth_accounts.new_keyring())
    return replace(base, database_url=request.getfixturevalue("clean_pg_url"), vault_keys=keyring)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator() as server:
        yield server


def add(runtime: Runtime, sim: Simulator, name: str, expires_in: timedelta, *, refresh: bool = True) -> str:
    grant = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
    return oauth_accounts.connect(
        runtime.db, runtime.open_vault(), sim_url=sim.url, client_id=DEFAULT_CLIENT_ID,
        client_secret=DEFAULT_CLIENT_SECRET, access_token=grant.access_token,
        refresh_token=grant.refresh_token if refresh else None, expires_at=utcnow() + expires_in, name=name,
    )  # fmt: skip


def test_the_runtime_refreshes_idle_accounts_before_they_expire(
    settings: RuntimeSettings, sim: Simulator
) -> None:
    async def body(runtime: Runtime) -> None:
        soon = timedelta(minutes=4)
        due = add(runtime, sim, "due", soon)
        later = add(runtime, sim, "later", timedelta(hours=1))
        lone = add(runtime, sim, "no-refresh-token", soon, refresh=False)
        off = add(runtime, sim, "disabled", soon)
        backing = add(runtime, sim, "backing-off", soon)
        with runtime.db.engine.begin() as conn:
            conn.execute(update(accounts).where(accounts.c.id == off).values(status="disabled"))
            conn.execute(
                update(accounts)
                .where(accounts.c.id == backing)
                .values(refresh_failures=1, refresh_retry_at=utcnow() + timedelta(minutes=1))
            )
        vault = runtime.open_vault()
        before = {a: oauth_accounts.stored(runtime.db, vault, a) for a in (due, later, lone, off, backing)}
        if not runtime.queued:
            runtime.start_polling()  # what serve does on SQLite; on PostgreSQL the worker already runs
        deadline = time.monotonic() + 20
        while oauth_accounts.stored(runtime.db, vault, due).access_token == before[due].access_token:
            assert time.monotonic() < deadline, "the idle account was not refreshed"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # five more rounds: nothing else is due
        assert sim.counts["oauth.token"] == 1
        fresh = oauth_accounts.stored(runtime.db, vault, due)
        assert fresh.token_expires_at is not None and fresh.token_expires_at > utcnow() + timedelta(
            minutes=55
        )
        for account in (later, lone, off, backing):
            now = oauth_accounts.stored(runtime.db, vault, account)
            assert (now.access_token, now.version) == (before[account].access_token, before[account].version)

    with_runtime(settings, body)


def test_no_token_or_client_secret_in_errors_last_error_or_logs(
    settings: RuntimeSettings, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    secrets: list[str] = [DEFAULT_CLIENT_SECRET]

    async def body(runtime: Runtime) -> tuple[str, dict[str, object] | None]:
        account_id = add(runtime, sim, "leaky", timedelta(minutes=4))
        saved = oauth_accounts.stored(runtime.db, runtime.open_vault(), account_id)
        assert saved.access_token and saved.refresh_token
        secrets.extend([saved.access_token, saved.refresh_token])
        # A server that quotes the refresh token back in its error description.
        sim.inject(Fault.invalid_grant(f"refresh token {saved.refresh_token} is unknown"), "oauth.token")
        with pytest.raises(AccountUnavailable) as refused:
            await runtime.tokens.access_token(account_id)
        after = oauth_accounts.stored(runtime.db, runtime.open_vault(), account_id)
        return str(refused.value), after.last_error

    with caplog.at_level(logging.DEBUG):
        message, last_error = with_runtime(settings, body)
    assert "must be reconnected" in message and "****" in message  # the quote is there, masked
    assert last_error is not None and last_error["code"] == "needs_reauth"
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "needs to be reconnected" in logged
    for secret in secrets:
        assert secret not in message and secret not in repr(last_error) and secret not in logged
