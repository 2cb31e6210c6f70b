"""The runtime retries the OAuth revocations a disconnect could not deliver: a revocation left in the
outbox while the provider's endpoint was down goes through once it is due, in a serving process
(`start_polling` embedded, `start_worker` on PostgreSQL), with no command run by anyone."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select, update

from cosmogen.domain.capabilities import default_registry
from cosmogen.domain.oauth import requested_scopes
from cosmogen.integrations.oauth_flow import (
    AuthorizationResponse,
    ConnectRequest,
    complete_connect,
    disconnect,
    new_session,
    start_connect,
)
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import new_key
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import oauth_revocations, utcnow
from cosmogen.testing.simulator import Fault, Simulator, ThreadedSimulator
from tests.oauth_harness import follow_authorization, sim_settings

REDIRECT = "http://127.0.0.1:8420/oauth/callback"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator() as server:
        yield server


def test_a_serving_runtime_delivers_a_revocation_left_in_the_outbox(
    settings: RuntimeSettings, sim: Simulator
) -> None:
    if settings.data_dir is None:  # PostgreSQL: the keyring comes from the environment, as for workers
        keys = {"active": "k1", "keys": {"k1": base64.b64encode(new_key()).decode()}}
        settings = replace(settings, vault_keys=Secret(json.dumps(keys)))
    sim.oauth.register_client("studio-app", "cs-app-secret-0123", [REDIRECT])
    registry = default_registry()

    async def body(runtime: Runtime) -> list[str]:
        # Opened without a worker or poller: the revocation is queued before anything serves.
        vault = runtime.open_vault()
        session = new_session()
        request = ConnectRequest(
            workspace="default",
            name="team",
            provider=registry.providers["slack"],
            client_id="studio-app",
            client_secret=Secret("cs-app-secret-0123"),
            settings=sim_settings(sim),
            scopes=requested_scopes(registry, "slack"),
            redirect_uri=REDIRECT,
            session=session,
            base_url=sim.url,
        )
        write, _ = start_connect(vault, request, utcnow)
        started = await runtime.writer.write(write)
        _, query = await asyncio.to_thread(follow_authorization, started.authorization_url)
        response = AuthorizationResponse.from_query(query, provider="slack", redirect_uri=REDIRECT)
        await complete_connect(
            runtime.writer, vault, runtime.http, registry, response, session=session, now=utcnow
        )
        sim.inject(Fault.server_error(503), "oauth.revoke", times=None)
        done = await disconnect(
            runtime.db,
            runtime.writer,
            vault,
            runtime.http,
            registry,
            workspace="default",
            name="team",
            now=utcnow,
        )
        assert [r.verdict for r in done.revocations] == ["retry", "retry"]
        sim.faults.clear()
        # Due now rather than in a minute (the backoff itself is OA-12's): a serving runtime picks it up.
        await runtime.writer.write(
            lambda conn: conn.execute(update(oauth_revocations).values(next_attempt_at=utcnow()))
        )
        if runtime.queued:
            await runtime.start_worker()  # `cosmogen worker` (and serve) on PostgreSQL
        else:
            runtime.start_polling()  # what `cosmogen serve` does on SQLite
        for _ in range(200):
            with runtime.db.engine.connect() as conn:
                statuses = list(conn.execute(select(oauth_revocations.c.status)).scalars())
            if statuses == ["done", "done"]:
                break
            await asyncio.sleep(0.05)
        return statuses

    async def main() -> list[str]:
        runtime = await Runtime.open(settings)
        try:
            return await body(runtime)
        finally:
            await runtime.close()

    assert asyncio.run(main()) == ["done", "done"]
    [family] = sim.oauth.families.values()
    assert family.revoked == "revoked"
    assert [c.status for c in sim.log.select("oauth.revoke")] == [503, 503, 200, 200]
