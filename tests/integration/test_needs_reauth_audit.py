"""OA-04b's audit event: when the authorization server no longer accepts a grant (invalid_grant), the
token manager marks the account `expired` / `needs_reauth` and writes one audit row in the same
transaction (actor: the system; details: codes only, never a token). Later calls find the account
already expired and write no second row. Both dialects, against the simulator's authorization server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.tokens import TokenManager
from cosmogen.store.tables import audit_log
from cosmogen.testing.simulator import Simulator, ThreadedSimulator
from tests import oauth_harness
from tests.oauth_harness import CLIENT_SECRET, Env, run

oauth_db = oauth_harness.oauth_db  # fixtures: both dialects, and a vault and writer on them
env = oauth_harness.env


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator() as server:
        yield server


def rows(env: Env) -> list[dict[str, object]]:
    with env.db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(audit_log).order_by(audit_log.c.at))]


def test_a_lost_grant_is_audited_once_without_a_token(env: Env, sim: Simulator) -> None:
    connected = env.connect(sim)
    [family] = sim.oauth.families.values()
    assert rows(env) == []
    assert sim.oauth.revoke_family(family.access_tokens[-1])  # the grant ends at the provider

    async def refresh(http: HttpClient) -> str:
        tokens = TokenManager(env.db, lambda: env.vault, http)
        with pytest.raises(AccountUnavailable) as first:
            await tokens.access_token(connected.account_id, force=True)
        with pytest.raises(AccountUnavailable):
            await tokens.access_token(connected.account_id, force=True)  # already expired: no new row
        return str(first.value)

    message = run(refresh)
    assert "reconnect" in message
    [row] = rows(env)
    assert (row["action"], row["object_type"], row["object_id"]) == (
        "account.needs_reauth", "account", connected.account_id,
    )  # fmt: skip
    assert (row["workspace_id"], row["actor_user_id"]) == ("default", None)
    assert row["details"] == {"code": "needs_reauth", "action": "reconnect"}
    assert env.account().status == "expired" and sim.counts["oauth.token"] == 2  # exchange + one refresh
    text = json.dumps(row, default=str)
    for secret in [*family.access_tokens, *family.refresh_tokens, CLIENT_SECRET]:
        assert secret not in text
