"""OA-05: the loser does not destroy the winner (both dialects).

Another writer that ignores our lease (a stale cache, a reconnect in another tool) changes the grant at
the worst moments:
- after we read it under the lease and before our token request: it reconnects (a new grant saved, the
  old one revoked at the server), so our refresh gets invalid_grant. We re-read storage, find another
  refresh token and use the stored grant: no error, no status change, nothing deleted.
- after the server answered us and before our commit: our compare-and-set on the version loses, and the
  newer grant stays as it was (never overwritten).
- and the control: an invalid_grant that a re-read confirms (the stored refresh token is the one we
  sent) marks the account `expired` with last_error `needs_reauth`, credentials kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from tests.reliability.token_support import LOOPBACK, Store, grant_account, store

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.capabilities import Action
from cosmogen.integrations.accounts import VaultOpener
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.http import HttpClient, HttpResponse
from cosmogen.integrations.tokens import Stored, TokenManager
from cosmogen.store.tables import utcnow
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import DEFAULT_CLIENT_ID, Simulator

__all__ = ["store"]  # the fixture

FIELDS = ["access_token", "client_secret", "refresh_token"]


class Interposed(TokenManager):
    """Runs `between` right after the re-read under the lease (the product code has no hook there)."""

    between: Callable[[], None] = staticmethod(lambda: None)

    async def _reread(self, account_id: str) -> Stored:
        stored = await super()._reread(account_id)
        self.between()
        self.between = staticmethod(lambda: None)  # once
        return stored


class AnsweredThen(HttpClient):
    """Runs `then` once the token endpoint answered, before the answer reaches the token manager."""

    then: Callable[[], None] = staticmethod(lambda: None)

    async def send(self, request: RenderedRequest, **options: Any) -> HttpResponse:
        response = await super().send(request, **options)
        if request.url.endswith("/oauth/token"):
            self.then()
        return response


def reconnect(store: Store, sim: Simulator, account_id: str, old_refresh: str) -> Any:
    """The other writer: a new grant saved (fresh for an hour), the old one revoked at the server."""
    fresh = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
    oauth_accounts.store_grant(
        store.db, store.vault, account_id, fresh.access_token, fresh.refresh_token,
        utcnow() + timedelta(hours=1),
    )  # fmt: skip
    sim.oauth.revoke_family(old_refresh)
    return fresh


def run(
    store: Store, body: Callable[[Simulator, HttpClient], Any], http_type: type[HttpClient] = HttpClient
) -> Any:
    async def main() -> Any:
        async with Simulator() as sim:
            http = http_type(LOOPBACK)
            await http.start()
            try:
                return await body(sim, http)
            finally:
                await http.close()

    return asyncio.run(main())


def test_oa05_invalid_grant_after_another_writer_rotated_uses_the_stored_grant(store: Store) -> None:
    async def body(sim: Simulator, http: HttpClient) -> None:
        account_id, grant = grant_account(store, sim)
        tokens = Interposed(store.db, VaultOpener(lambda: store.vault), http)
        fresh: dict[str, Any] = {}
        tokens.between = lambda: fresh.update(grant=reconnect(store, sim, account_id, grant.refresh_token))
        try:
            token = await tokens.access_token(account_id)  # raises nothing
        finally:
            await tokens.close()
        [call] = sim.log.select("oauth.token")
        assert call.status == 400 and call.body["refresh_token"] == grant.refresh_token  # we lost the race
        winner = fresh["grant"]
        assert token.reveal() == winner.access_token
        assert sim.oauth.check_access_token(winner.access_token) == "valid"
        saved = oauth_accounts.stored(store.db, store.vault, account_id)
        assert (saved.status, saved.last_error) == ("connected", None)
        assert saved.refresh_token == winner.refresh_token and saved.access_token == winner.access_token
        assert saved.fields == FIELDS  # nothing deleted

    run(store, body)


def test_oa05_a_cas_conflict_keeps_the_newer_grant(store: Store) -> None:
    async def body(sim: Simulator, http: HttpClient) -> None:
        assert isinstance(http, AnsweredThen)
        account_id, _ = grant_account(store, sim)
        tokens = TokenManager(store.db, VaultOpener(lambda: store.vault), http)
        fresh: dict[str, Any] = {}

        def newer_grant_saved() -> None:  # a reconnect lands while our answer is on its way
            winner = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
            oauth_accounts.store_grant(
                store.db, store.vault, account_id, winner.access_token, winner.refresh_token,
                utcnow() + timedelta(hours=1),
            )  # fmt: skip
            fresh["grant"] = winner

        http.then = newer_grant_saved
        before = oauth_accounts.stored(store.db, store.vault, account_id).version
        try:
            token = await tokens.access_token(account_id)
        finally:
            await tokens.close()
        assert sim.counts["oauth.token"] == 1 and sim.log.select("oauth.token")[0].status == 200
        winner = fresh["grant"]
        saved = oauth_accounts.stored(store.db, store.vault, account_id)
        assert saved.refresh_token == winner.refresh_token and saved.access_token == winner.access_token
        assert token.reveal() == winner.access_token
        assert saved.version == before + 1  # only the other writer's write: ours was not applied
        assert saved.status == "connected" and saved.lease_owner is None

    run(store, body, AnsweredThen)


def test_oa05_an_invalid_grant_confirmed_by_a_re_read_marks_needs_reauth_and_keeps_credentials(
    store: Store,
) -> None:
    async def body(sim: Simulator, http: HttpClient) -> None:
        account_id, grant = grant_account(store, sim)
        sim.oauth.revoke_family(grant.refresh_token)  # the person revoked the app at the provider
        tokens = TokenManager(store.db, VaultOpener(lambda: store.vault), http)
        try:
            with pytest.raises(AccountUnavailable, match="must be reconnected") as refused:
                await tokens.access_token(account_id)
            assert refused.value.action is Action.RECONNECT
            assert grant.refresh_token not in str(refused.value)
            # Once expired, nobody calls the token endpoint again for it.
            with pytest.raises(AccountUnavailable) as again:
                await tokens.access_token(account_id)
            assert again.value.action is Action.RECONNECT
        finally:
            await tokens.close()
        assert sim.counts["oauth.token"] == 1
        saved = oauth_accounts.stored(store.db, store.vault, account_id)
        assert saved.status == "expired" and saved.last_error is not None
        assert saved.last_error["code"] == "needs_reauth" and "reconnect" in saved.last_error["message"]
        assert saved.fields == FIELDS and saved.refresh_token == grant.refresh_token  # kept, not deleted

    run(store, body)
