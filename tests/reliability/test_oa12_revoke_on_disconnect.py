"""OA-12: revoke on disconnect, on SQLite and PostgreSQL, against the simulator's RFC 7009 endpoint.

- For each OAuth provider: an RFC 7009 POST with the token in the form body (never the URL); the grant
  is dead at the authorization server afterwards; a 200 for a token the server does not know is success.
- The token ciphertexts are deleted in the same transaction as the status change (both or neither).
- With the revocation endpoint down, the local delete still happens and the revocation waits in the
  outbox, is retried after its backoff (not before), and goes through once the endpoint is back; it is
  given up after REVOCATION_MAX_ATTEMPTS, and the token is then not kept either.
- Later use of the account is refused with "reconnect" (the executor's account resolver, unchanged)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests import oauth_harness
from tests.oauth_harness import Env, follow_authorization, run, sim_settings

from cosmogen.domain.capabilities import Action
from cosmogen.domain.oauth import REVOCATION_MAX_ATTEMPTS
from cosmogen.integrations import credentials
from cosmogen.integrations.accounts import DbAccountResolver
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.oauth_flow import (
    ConnectError,
    Disconnected,
    disconnect,
    forget_tokens,
    pending_revocations,
    retry_due_revocations,
)
from cosmogen.store.tables import oauth_flows, oauth_revocations, utcnow
from cosmogen.testing.simulator import Fault, Simulator, ThreadedSimulator

oauth_db = oauth_harness.oauth_db  # fixtures: both dialects, and a vault and writer on them
env = oauth_harness.env

CAPABILITY = {"slack": "slack.post_message", "x": "x.post", "instagram": "instagram.publish_image"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator() as server:
        yield server


def do_disconnect(env: Env, name: str = "team") -> Disconnected:
    return run(
        lambda http: disconnect(
            env.db, env.writer, env.vault, http, env.registry, workspace="default", name=name, now=env.now
        )
    )


def fields(env: Env, name: str = "team") -> list[str]:
    with env.db.engine.connect() as conn:
        return credentials.secret_fields(conn, env.account(name).id)


def outbox(env: Env) -> list[Any]:
    with env.db.engine.connect() as conn:
        return list(conn.execute(select(oauth_revocations).order_by(oauth_revocations.c.created_at)).all())


def tokens_of(sim: Simulator) -> tuple[str, str]:
    [family] = sim.oauth.families.values()
    assert family.current_refresh is not None
    return family.access_tokens[-1], family.current_refresh


def use(env: Env, name: str = "team", provider: str = "slack") -> AccountUnavailable | None:
    """Ask the executor's account resolver for the account, as a provider binding would."""
    resolver = DbAccountResolver(env.db, lambda: env.vault, utcnow)
    capability = env.registry.capabilities[CAPABILITY.get(provider, "http.request")]
    try:
        asyncio.run(resolver.connection("default", name, capability, env.registry.providers[provider]))
    except AccountUnavailable as exc:
        return exc
    return None


@pytest.mark.parametrize("provider", ["slack", "x", "instagram", "http"])
def test_oa12_disconnect_revokes_with_the_token_in_the_body_for_each_provider(
    env: Env, sim: Simulator, provider: str
) -> None:
    env.connect(sim, provider=provider)
    access, refresh = tokens_of(sim)
    assert use(env, provider=provider) is None  # connected and usable before
    done = do_disconnect(env)
    assert [(r.token_type_hint, r.verdict) for r in done.revocations] == [
        ("refresh_token", "done"),
        ("access_token", "done"),
    ]
    calls = sim.log.select("oauth.revoke")
    assert [c.body["token"] for c in calls] == [refresh, access]
    for call in calls:
        assert call.method == "POST" and call.status == 200
        assert call.query == {} and access not in call.path and refresh not in call.path  # never the URL
        assert call.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert sim.oauth.check_access_token(access) == "revoked"
    assert sim.oauth.family_of(refresh).revoked == "revoked"  # type: ignore[union-attr]
    # Locally: no token left, not even the outbox's copies; the account says "reconnect".
    assert fields(env) == ["client_secret"]
    account = env.account()
    assert (account.status, account.token_expires_at) == ("expired", None)
    assert account.last_error["code"] == "disconnected" and "reconnect" in account.last_error["message"]
    assert [r.status for r in outbox(env)] == ["done", "done"]
    refused = use(env, provider=provider)
    assert refused is not None and refused.action is Action.RECONNECT and "reconnect" in str(refused)


def test_oa12_a_provider_without_a_revocation_endpoint_still_loses_its_tokens(
    env: Env, sim: Simulator
) -> None:
    env.connect(sim, provider="instagram", settings=sim_settings(sim, revoke=False))
    done = do_disconnect(env)
    assert (done.revocable, done.revocations, done.tokens_deleted) == (False, (), 2)
    assert sim.counts["oauth.revoke"] == 0 and fields(env) == ["client_secret"]
    assert env.account().status == "expired"


def test_oa12_a_200_for_a_token_the_server_does_not_know_is_success(env: Env, sim: Simulator) -> None:
    env.connect(sim)
    sim.oauth.reset()  # the server forgets every grant (revoked elsewhere, or expired long ago)
    done = do_disconnect(env)
    assert [r.verdict for r in done.revocations] == ["done", "done"]
    assert [c.status for c in sim.log.select("oauth.revoke")] == [200, 200]
    assert pending_revocations_of(env) == 0 and fields(env) == ["client_secret"]


def pending_revocations_of(env: Env) -> int:
    with env.db.engine.connect() as conn:
        return pending_revocations(conn)


def test_oa12_token_delete_and_status_change_are_one_transaction(env: Env, sim: Simulator) -> None:
    env.connect(sim)
    write = forget_tokens(env.vault, env.registry, "default", "team", env.now)

    class Crash(Exception):
        pass

    def crash_after(conn: Any) -> None:
        write(conn)
        # Inside the transaction both changed...
        assert credentials.secret_fields(conn, env.account().id).count("access_token") == 0
        raise Crash  # ...and a crash before the commit undoes both

    with pytest.raises(Crash):
        env.writer.submit(crash_after).result()
    assert env.account().status == "connected"
    assert {"access_token", "refresh_token"} <= set(fields(env))
    assert outbox(env) == []
    env.writer.submit(write).result()
    assert env.account().status == "expired"
    assert not {"access_token", "refresh_token"} & set(fields(env))
    assert len(outbox(env)) == 2  # the tokens to revoke wait in the outbox, in the same commit


def test_oa12_endpoint_down_local_delete_happens_and_the_outbox_retries_later(
    env: Env, sim: Simulator
) -> None:
    env.connect(sim)
    access, refresh = tokens_of(sim)
    t0 = utcnow()
    env.clock.append(t0)
    sim.inject(Fault.server_error(503), "oauth.revoke", times=None)
    done = do_disconnect(env)
    assert [r.verdict for r in done.revocations] == ["retry", "retry"]
    assert "503" in done.revocations[0].message
    # Deleted here all the same; the grant is still alive there, waiting in the outbox.
    account = env.account()
    assert account.status == "expired" and "access_token" not in fields(env)
    assert sim.oauth.check_access_token(access) == "valid"
    rows = outbox(env)
    assert [(r.status, r.attempts) for r in rows] == [("pending", 1), ("pending", 1)]
    assert all(r.next_attempt_at == t0 + timedelta(minutes=1) for r in rows)
    assert all(r.field.startswith("revoke_") for r in rows)
    assert use(env) is not None  # refused meanwhile

    def retry() -> list[Any]:
        return run(
            lambda http: retry_due_revocations(
                env.db, env.writer, lambda: env.vault, http, env.registry, now=env.now
            )
        )

    # Not before the backoff has passed: no request at all.
    env.clock.append(t0 + timedelta(seconds=59))
    assert retry() == [] and sim.counts["oauth.revoke"] == 2
    # Still down at the first retry: attempt 2, backoff doubled.
    env.clock.append(t0 + timedelta(minutes=1))
    assert [r.verdict for r in retry()] == ["retry", "retry"]
    assert all(r.next_attempt_at == env.now() + timedelta(minutes=2) for r in outbox(env))
    # The endpoint is back: both go through, the grant is dead there and the copies are gone here.
    sim.faults.clear()
    env.clock.append(env.now() + timedelta(minutes=2))
    assert [r.verdict for r in retry()] == ["done", "done"]
    assert sim.oauth.check_access_token(access) == "revoked"
    assert sim.oauth.family_of(refresh).revoked == "revoked"  # type: ignore[union-attr]
    assert [(r.status, r.attempts) for r in outbox(env)] == [("done", 3), ("done", 3)]
    assert fields(env) == ["client_secret"]
    assert [c.body["token"] for c in sim.log.select("oauth.revoke")][-2:] == [refresh, access]


def test_oa12_a_revocation_is_given_up_after_the_last_attempt(env: Env, sim: Simulator) -> None:
    env.connect(sim)
    env.clock.append(utcnow())
    sim.inject(Fault.server_error(500), "oauth.revoke", times=None)
    do_disconnect(env)
    for _ in range(REVOCATION_MAX_ATTEMPTS - 1):
        env.clock.append(env.now() + timedelta(hours=7))  # past any backoff
        run(
            lambda http: retry_due_revocations(
                env.db, env.writer, lambda: env.vault, http, env.registry, now=env.now
            )
        )
    rows = outbox(env)
    assert [(r.status, r.attempts) for r in rows] == [("failed", REVOCATION_MAX_ATTEMPTS)] * 2
    assert "gave up" in rows[0].last_error["message"]
    assert sim.counts["oauth.revoke"] == 2 * REVOCATION_MAX_ATTEMPTS
    assert fields(env) == ["client_secret"]  # the token is not kept for ever


def test_disconnecting_again_retries_what_is_left_at_once(env: Env, sim: Simulator) -> None:
    env.connect(sim)
    sim.inject(Fault.server_error(503), "oauth.revoke", times=2)
    first = do_disconnect(env)
    assert [r.verdict for r in first.revocations] == ["retry", "retry"]
    second = do_disconnect(env)  # the person insists: no backoff wait
    assert (second.tokens_deleted, [r.verdict for r in second.revocations]) == (0, ["done", "done"])
    assert pending_revocations_of(env) == 0


def test_disconnect_refuses_unknown_and_non_oauth_accounts_and_ends_flows_in_progress(
    env: Env, sim: Simulator
) -> None:
    with pytest.raises(ConnectError, match="no account named 'nobody'"):
        do_disconnect(env, "nobody")
    env.writer.submit(
        credentials.create_account(workspace_id="default", provider="openai", name="gpt", auth_kind="api_key")
    ).result()
    with pytest.raises(ConnectError, match="only OAuth accounts"):
        do_disconnect(env, "gpt")
    started, _ = env.start(sim, "half")
    _, query = follow_authorization(started.authorization_url)
    do_disconnect(env, "half")
    with env.db.engine.connect() as conn:
        assert conn.execute(select(oauth_flows.c.used_at)).scalar() is not None
    with pytest.raises(ConnectError) as caught:
        env.complete(query)
    assert caught.value.code == "state_used" and sim.counts["oauth.token"] == 0


def test_a_disconnected_account_can_be_connected_again(env: Env, sim: Simulator) -> None:
    env.connect(sim)
    do_disconnect(env)
    again = env.connect(sim)
    assert again.scopes == ("chat:write",) and env.account().status == "connected"
    assert use(env) is None


def test_a_due_revocation_is_sent_once_when_two_rounds_race(env: Env, sim: Simulator) -> None:
    env.connect(sim)
    sim.inject(Fault.server_error(503), "oauth.revoke", times=2)
    do_disconnect(env)
    env.clock.append(utcnow() + timedelta(minutes=5))

    async def race(http: Any) -> list[list[str]]:
        rounds = [
            retry_due_revocations(env.db, env.writer, lambda: env.vault, http, env.registry, now=env.now)
            for _ in range(2)
        ]
        return [[r.verdict for r in done] for done in await asyncio.gather(*rounds)]

    verdicts = run(race)
    # Whatever each round saw as due, each entry was taken by one round only (the other skips it).
    flat = [v for round_ in verdicts for v in round_]
    assert flat.count("done") == 2 and set(flat) <= {"done", "skipped"}
    assert sim.counts["oauth.revoke"] == 4  # 2 refused at disconnect + 2 delivered, none twice
