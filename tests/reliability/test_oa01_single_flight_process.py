"""OA-01: single-flight refresh within one process (both dialects).

50 coroutines each need a Slack account's token when it is 4 min from expiry; each goes the executor's
way (the account resolver, then a request to the simulator's chat.postMessage). Pass: exactly 1 call to
the token endpoint, all 50 posts carry the one new access token, the stored refresh token is the one
the server answered with, 0 invalid_grant, 0 requests without Authorization, the family not revoked.
"""

from __future__ import annotations

import asyncio

from tests.reliability.token_support import Store, grant_account, manager, started_http, store

from cosmogen.domain.capabilities import default_registry
from cosmogen.integrations.accounts import DbAccountResolver, VaultOpener
from cosmogen.integrations.connections import provider_request
from cosmogen.store.tables import utcnow
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import Simulator

__all__ = ["store"]  # the fixture

CALLERS = 50


def test_oa01_fifty_callers_share_one_refresh(store: Store) -> None:
    registry = default_registry()
    capability = registry.capability("slack.post_message")
    provider = registry.provider_of(capability)
    settings = capability.parse_settings({"channel": "C0SIM00001", "text": "hello"})

    async def main() -> None:
        async with Simulator() as sim:
            account_id, grant = grant_account(store, sim)
            http = await started_http()
            tokens = manager(store, http)
            resolver = DbAccountResolver(store.db, VaultOpener(lambda: store.vault), utcnow, tokens=tokens)
            try:

                async def post() -> int:
                    connection = await resolver.connection("default", "team-slack", capability, provider)
                    wanted = capability.steps[0].build(settings, {})
                    response = await http.send(provider_request(provider, connection, wanted, 10.0))
                    return response.status

                statuses = await asyncio.gather(*(post() for _ in range(CALLERS)))
            finally:
                await tokens.close()
                await http.close()

            assert sim.counts["oauth.token"] == 1
            [call] = sim.log.select("oauth.token")
            assert call.status == 200 and call.body["refresh_token"] == grant.refresh_token
            posts = sim.log.select("slack.postMessage")
            assert statuses == [200] * CALLERS and len(posts) == CALLERS
            assert all(p.headers.get("Authorization", "").startswith("Bearer ") for p in posts)
            used = {p.credential for p in posts}
            assert len(used) == 1 and grant.access_token not in used
            [new_access] = used
            assert new_access is not None
            family = sim.oauth.family_of(new_access)
            assert family is not None and family.revoked is None and sim.oauth.revocations == []
            saved = oauth_accounts.stored(store.db, store.vault, account_id)
            assert saved.access_token == new_access
            assert saved.refresh_token == family.current_refresh != grant.refresh_token
            assert saved.status == "connected" and saved.lease_owner is None
            assert saved.token_expires_at is not None and saved.token_expires_at > utcnow()

    asyncio.run(main())
