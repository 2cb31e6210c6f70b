"""OA-06: transient token-endpoint failures keep the grant (both dialects, frozen clock).

Five refresh attempts in a row fail: 500, 502, 503, 429 and a timeout (a listener that accepts and never
answers, so nothing was done at the server). After each: the account stays `connected` with every
credential, last_error says `refresh_failed_transient` with the failure count and the next attempt's
time, calls in between use the still-valid token and reach nobody, and the backoff doubles. The sixth
attempt succeeds and clears the failure state. A token that has expired meanwhile gives callers a
retryable error during the backoff, with no call. The server never revoked anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from tests.reliability.token_support import LOOPBACK, Store, store

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.capabilities import Action
from cosmogen.domain.tokens import RefreshPolicy
from cosmogen.integrations.accounts import VaultOpener
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.http import HttpClient, HttpResponse
from cosmogen.integrations.tokens import TokenManager
from cosmogen.store.tables import accounts
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, Simulator

__all__ = ["store"]  # the fixture

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FIELDS = ["access_token", "client_secret", "refresh_token"]


class ShortTimeouts(HttpClient):
    """The token endpoint's 20 s timeout cut to 1 s, so a timeout costs the test 1 s."""

    async def send(self, request: RenderedRequest, **options: Any) -> HttpResponse:
        return await super().send(replace(request, timeout_s=1.0), **options)


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """A listener on 127.0.0.1 that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    sock: socket.socket = server.sockets[0]
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def set_token_url(store: Store, account_id: str, sim_url: str, token_url: str) -> None:
    settings = oauth_accounts.oauth_settings(sim_url, DEFAULT_CLIENT_ID)
    settings["oauth"]["token_url"] = token_url
    with store.db.engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(settings=settings))


def test_oa06_five_transient_failures_keep_the_grant_and_the_next_success_restores_it(store: Store) -> None:
    clock = {"now": T - timedelta(minutes=4)}
    policy = RefreshPolicy()

    async def main() -> None:
        async with Simulator() as sim, black_hole() as silent:
            grant = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
            account_id = oauth_accounts.connect(
                store.db, store.vault, sim_url=sim.url, client_id=DEFAULT_CLIENT_ID,
                client_secret=DEFAULT_CLIENT_SECRET, access_token=grant.access_token,
                refresh_token=grant.refresh_token, expires_at=T,
            )  # fmt: skip
            http = ShortTimeouts(LOOPBACK)
            await http.start()
            tokens = TokenManager(
                store.db, VaultOpener(lambda: store.vault), http, policy=policy,
                now=lambda: clock["now"], jitter=lambda: 1.0,
            )  # fmt: skip
            failures = [Fault.server_error(500), Fault.server_error(502), Fault.server_error(503)]
            failures.append(Fault.rate_limited(retry_after=1))
            try:
                delays = []
                for attempt in range(1, 6):
                    before = sim.counts["oauth.token"]
                    if attempt <= 4:
                        sim.inject(failures[attempt - 1], "oauth.token")
                    else:
                        set_token_url(store, account_id, sim.url, f"{silent}/oauth/token")
                    token = await tokens.access_token(account_id)
                    assert token.reveal() == grant.access_token  # still valid: callers keep working
                    assert sim.counts["oauth.token"] == before + (1 if attempt <= 4 else 0)
                    saved = oauth_accounts.stored(store.db, store.vault, account_id)
                    assert saved.status == "connected" and saved.fields == FIELDS
                    assert saved.refresh_token == grant.refresh_token
                    assert saved.refresh_failures == attempt
                    assert saved.last_error is not None
                    assert saved.last_error["code"] == "refresh_failed_transient"
                    assert saved.last_error["failures"] == attempt
                    assert saved.refresh_retry_at is not None and saved.refresh_retry_at > clock["now"]
                    delays.append(saved.refresh_retry_at - clock["now"])
                    # Until the backoff ends, callers get the old token and the server hears nothing.
                    calls = sim.counts["oauth.token"]
                    clock["now"] = saved.refresh_retry_at - timedelta(seconds=1)
                    assert (await tokens.access_token(account_id)).reveal() == grant.access_token
                    assert sim.counts["oauth.token"] == calls
                    clock["now"] = saved.refresh_retry_at
                assert delays == [timedelta(seconds=s) for s in (5, 10, 20, 40, 80)]
                set_token_url(store, account_id, sim.url, f"{sim.url}/oauth/token")
                fresh = await tokens.access_token(account_id)
            finally:
                await tokens.close()
                await http.close()
            assert fresh.reveal() != grant.access_token
            assert sim.oauth.check_access_token(fresh.reveal()) == "valid"
            saved = oauth_accounts.stored(store.db, store.vault, account_id)
            assert (saved.status, saved.last_error, saved.refresh_failures) == ("connected", None, 0)
            assert saved.refresh_retry_at is None
            assert sim.oauth.revocations == []

    asyncio.run(main())


def test_oa06_an_expired_token_in_backoff_gives_a_retryable_error_and_no_call(store: Store) -> None:
    clock = {"now": T + timedelta(seconds=10)}  # the stored token expired 10 s ago

    async def main() -> None:
        async with Simulator() as sim:
            grant = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
            account_id = oauth_accounts.connect(
                store.db, store.vault, sim_url=sim.url, client_id=DEFAULT_CLIENT_ID,
                client_secret=DEFAULT_CLIENT_SECRET, access_token=grant.access_token,
                refresh_token=grant.refresh_token, expires_at=T,
            )  # fmt: skip
            http = HttpClient(LOOPBACK)
            await http.start()
            tokens = TokenManager(
                store.db, VaultOpener(lambda: store.vault), http, now=lambda: clock["now"], jitter=lambda: 0.0
            )
            sim.inject(Fault.server_error(503), "oauth.token")
            try:
                with pytest.raises(AccountUnavailable, match="refreshing its access token failed") as failed:
                    await tokens.access_token(account_id)
                assert failed.value.action is Action.WAIT
                with pytest.raises(AccountUnavailable, match="next attempt at") as waiting:
                    await tokens.access_token(account_id)
                assert waiting.value.action is Action.WAIT
                assert sim.counts["oauth.token"] == 1
                clock["now"] += timedelta(seconds=2.5)  # the backoff (5 s at jitter 0: 2.5 s) is over
                fresh = await tokens.access_token(account_id)
            finally:
                await tokens.close()
                await http.close()
            assert sim.counts["oauth.token"] == 2 and fresh.reveal() != grant.access_token
            saved = oauth_accounts.stored(store.db, store.vault, account_id)
            assert (saved.status, saved.refresh_failures, saved.last_error) == ("connected", 0, None)

    asyncio.run(main())


def test_a_wrong_oauth_setting_keeps_the_grant_and_says_what_to_fix(store: Store) -> None:
    clock = {"now": T - timedelta(minutes=4)}

    async def main() -> None:
        async with Simulator() as sim:
            grant = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
            account_id = oauth_accounts.connect(
                store.db, store.vault, sim_url=sim.url, client_id=DEFAULT_CLIENT_ID,
                client_secret=DEFAULT_CLIENT_SECRET, access_token=grant.access_token,
                refresh_token=grant.refresh_token, expires_at=T,
            )  # fmt: skip
            set_token_url(store, account_id, sim.url, "ftp://127.0.0.1/oauth/token")
            http = HttpClient(LOOPBACK)
            await http.start()
            tokens = TokenManager(
                store.db, VaultOpener(lambda: store.vault), http, now=lambda: clock["now"], jitter=lambda: 1.0
            )
            try:
                token = await tokens.access_token(account_id)  # due, still valid: used meanwhile
                assert token.reveal() == grant.access_token
                saved = oauth_accounts.stored(store.db, store.vault, account_id)
                assert saved.status == "connected" and saved.refresh_failures == 1
                assert saved.last_error is not None and saved.last_error["code"] == "oauth_client_error"
                assert "oauth.token_url" in saved.last_error["message"]
                clock["now"] = T  # expired, and the setting is still wrong
                with pytest.raises(AccountUnavailable, match=r"oauth\.token_url") as refused:
                    await tokens.access_token(account_id)
                assert refused.value.action is Action.FIX_SETTING
            finally:
                await tokens.close()
                await http.close()
            assert sim.counts["oauth.token"] == 0 and sim.oauth.revocations == []
            assert oauth_accounts.stored(store.db, store.vault, account_id).fields == FIELDS

    asyncio.run(main())
