"""OA-09 (`state` and CSRF on the callback) and OA-10 (mix-up), on SQLite and PostgreSQL, against the
provider simulator's authorization server over HTTP.

Every bad authorization response is refused before any token request: the simulator's token endpoint
counts 0 calls (OA-09 and OA-10's pass bar). A good one is exchanged exactly once, and a state is good for
one response only, even when that response was refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from tests import oauth_harness
from tests.oauth_harness import CLIENT_SECRET, SESSION, Env, follow_authorization, redirect_uri, sim_settings

from cosmogen.integrations import credentials
from cosmogen.integrations.oauth import new_state
from cosmogen.integrations.oauth_flow import ConnectError, new_session
from cosmogen.store.tables import oauth_flows, utcnow
from cosmogen.testing.simulator import Simulator, ThreadedSimulator

oauth_db = oauth_harness.oauth_db  # fixtures: both dialects, and a vault and writer on them
env = oauth_harness.env


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator(name="as-a") as server:
        yield server


@pytest.fixture
def sim_b() -> Iterator[Simulator]:
    with ThreadedSimulator(name="as-b") as server:
        yield server


def refused(env: Env, query: dict[str, str], **kw: str) -> ConnectError:
    with pytest.raises(ConnectError) as caught:
        env.complete(query, **kw)
    return caught.value


def test_a_good_response_is_exchanged_once_and_the_tokens_go_to_the_vault(env: Env, sim: Simulator) -> None:
    started, state = env.start(sim)
    assert env.account().status == "pending"
    location, query = follow_authorization(started.authorization_url)
    assert query["state"] == state and query["iss"] == sim.url and query["code"]
    connected = env.complete(query)
    assert sim.counts["oauth.token"] == 1
    [token_call] = sim.log.select("oauth.token")
    assert token_call.body["code_verifier"] and token_call.body["grant_type"] == "authorization_code"
    assert token_call.headers["Authorization"].startswith("Basic ")  # client_secret_basic
    account = env.account()
    assert (account.status, account.scopes, connected.scopes) == (
        "connected",
        ["chat:write"],
        ("chat:write",),
    )
    assert account.verified_at is not None and account.token_expires_at is not None
    [family] = sim.oauth.families.values()
    with env.db.engine.connect() as conn:
        stored = credentials.reveal_credentials(conn, env.vault, account.id)
        flow = conn.execute(select(oauth_flows)).one()
    assert stored["access_token"].reveal() == family.access_tokens[-1]
    assert stored["refresh_token"].reveal() == family.current_refresh
    assert stored["client_secret"].reveal() == CLIENT_SECRET
    # The state itself is not stored, only its hash; the verifier only sealed.
    row_bytes = repr(tuple(flow)).encode()
    assert state.encode() not in row_bytes and token_call.body["code_verifier"].encode() not in row_bytes
    assert flow.used_at is not None and flow.session_hash != SESSION
    # Replaying the same response: refused, and still one token call.
    again = refused(env, query)
    assert again.code == "state_used"
    assert sim.counts["oauth.token"] == 1
    assert "/oauth/callback/slack" in location


def test_oa09_every_bad_callback_is_refused_with_no_token_request(env: Env, sim: Simulator) -> None:
    codes: dict[str, str] = {}

    # A state from another browser session: refused, and spent (the right session cannot use it later).
    started, _ = env.start(sim, "other-session")
    _, query = follow_authorization(started.authorization_url)
    codes["other session"] = refused(env, query, session=new_session()).code
    codes["the right session after that"] = refused(env, query).code

    # Expired: 10 minutes and 1 second after the start.
    t0 = utcnow()
    env.clock.append(t0)
    started, _ = env.start(sim, "expired")
    _, query = follow_authorization(started.authorization_url)
    env.clock.append(t0 + timedelta(minutes=10, seconds=1))
    codes["expired"] = refused(env, query).code
    env.clock.clear()

    # Missing state, an unknown state, a state too short to be ours.
    started, _ = env.start(sim, "missing")
    _, query = follow_authorization(started.authorization_url)
    codes["missing state"] = refused(env, {k: v for k, v in query.items() if k != "state"}).code
    codes["unknown state"] = refused(env, {**query, "state": new_state()}).code
    codes["short state"] = refused(env, {**query, "state": "abc"}).code

    # A code whose stored verifier cannot be used: the flow row was deleted, or its sealed verifier was
    # swapped for another flow's (the vault's associated data binds it to its own flow).
    started, _ = env.start(sim, "deleted")
    _, query = follow_authorization(started.authorization_url)
    env.writer.submit(
        lambda conn: conn.execute(oauth_flows.delete().where(oauth_flows.c.state_hash == started.state_hash))
    ).result()
    codes["flow row deleted"] = refused(env, query).code
    first, _ = env.start(sim, "swapped")
    second, _ = env.start(sim, "swapped")  # a second attempt on the same account
    _, query = follow_authorization(first.authorization_url)

    def swap(conn: object) -> None:
        other = conn.execute(  # type: ignore[attr-defined]
            select(oauth_flows).where(oauth_flows.c.state_hash == second.state_hash)
        ).one()
        conn.execute(  # type: ignore[attr-defined]
            update(oauth_flows)
            .where(oauth_flows.c.state_hash == first.state_hash)
            .values(
                verifier_ciphertext=other.verifier_ciphertext,
                verifier_wrapped_key=other.verifier_wrapped_key,
                key_id=other.key_id,
            )
        )

    env.writer.submit(swap).result()
    codes["verifier of another flow"] = refused(env, query).code

    # Consent denied at the authorization server (error=access_denied with our state).
    started, state = env.start(sim, "denied")
    codes["access denied"] = refused(
        env, {"state": state, "error": "access_denied", "iss": sim.url, "error_description": "no"}
    ).code

    assert codes == {
        "other session": "other_session",
        "the right session after that": "state_used",
        "expired": "expired",
        "missing state": "missing_state",
        "unknown state": "unknown_state",
        "short state": "unknown_state",
        "flow row deleted": "unknown_state",
        "verifier of another flow": "no_verifier",
        "access denied": "access_denied",
    }
    assert sim.counts["oauth.token"] == 0  # not one token request for any of them
    denied = env.account("denied")
    assert denied.status == "error" and denied.last_error["code"] == "access_denied"
    assert "declined" in denied.last_error["message"]


def test_oa09_one_second_before_expiry_is_still_accepted(env: Env, sim: Simulator) -> None:
    t0 = utcnow()
    env.clock.append(t0)
    started, _ = env.start(sim)
    _, query = follow_authorization(started.authorization_url)
    env.clock.append(t0 + timedelta(minutes=9, seconds=59))
    assert env.complete(query).scopes == ("chat:write",)
    assert sim.counts["oauth.token"] == 1


def test_oa09_states_carry_at_least_128_random_bits() -> None:
    states = [new_state() for _ in range(2000)]
    assert len(set(states)) == len(states)
    for state in states[:100]:
        assert len(base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))) * 8 >= 128


def test_oa10_mix_up_and_issuer_mismatch_are_refused_with_no_token_request(
    env: Env, sim: Simulator, sim_b: Simulator
) -> None:
    codes: dict[str, str] = {}
    # (a) A flow started with B (X at AS B) answered at A's callback (Slack at AS A).
    started_b, _ = env.start(sim_b, "social", "x", settings=sim_settings(sim_b))
    _, query_b = follow_authorization(started_b.authorization_url)
    codes["B's response at A's callback"] = refused(env, query_b, provider="slack").code
    # Same provider at two servers: A's response delivered to the redirect URI of another flow.
    started_a, _ = env.start(sim, "team-a", "slack")
    _, query_a = follow_authorization(started_a.authorization_url)
    codes["A's response at another redirect URI"] = refused(
        env, query_a, at=redirect_uri("slack") + "/elsewhere"
    ).code

    # (b) `iss` not the issuer the flow started with: another server's, or none at all.
    started, _ = env.start(sim, "team-b", "slack")
    _, query = follow_authorization(started.authorization_url)
    codes["iss of another server"] = refused(env, {**query, "iss": sim_b.url}).code
    started, _ = env.start(sim, "team-c", "slack")
    _, query = follow_authorization(started.authorization_url)
    codes["no iss"] = refused(env, {k: v for k, v in query.items() if k != "iss"}).code

    # The account's server changed between start and callback (settings edited meanwhile).
    started, _ = env.start(sim, "team-d", "slack")
    _, query = follow_authorization(started.authorization_url)
    env.start(sim_b, "team-d", "slack", settings=sim_settings(sim_b))  # a reconnect, pointed at B
    codes["server changed"] = refused(env, query).code

    assert codes == {
        "B's response at A's callback": "mix_up",
        "A's response at another redirect URI": "mix_up",
        "iss of another server": "issuer_mismatch",
        "no iss": "issuer_mismatch",
        "server changed": "server_changed",
    }
    assert sim.counts["oauth.token"] == 0 and sim_b.counts["oauth.token"] == 0


def test_oa10_a_server_without_iss_is_not_asked_for_one(env: Env, sim: Simulator) -> None:
    started, _ = env.start(sim, settings=sim_settings(sim, issuer=False))
    _, query = follow_authorization(started.authorization_url)
    connected = env.complete({k: v for k, v in query.items() if k != "iss"})
    assert connected.scopes == ("chat:write",) and sim.counts["oauth.token"] == 1


def test_a_refused_code_exchange_leaves_the_account_in_error_with_what_to_do(
    env: Env, sim: Simulator
) -> None:
    started, _ = env.start(sim, client_secret=CLIENT_SECRET)
    _, query = follow_authorization(started.authorization_url)
    sim.oauth.register_client("studio-app", "a-rotated-secret", [redirect_uri("slack")])  # ours is stale
    error = refused(env, query)
    assert error.code.startswith("token_") and "start connecting again" in str(error)
    assert CLIENT_SECRET not in str(error)
    assert sim.counts["oauth.token"] == 1
    account = env.account()
    assert account.status == "error" and account.last_error["action"] == "reconnect"


def test_a_connected_account_is_not_connected_twice(env: Env, sim: Simulator) -> None:
    env.connect(sim)
    with pytest.raises(ConnectError, match="disconnect it first"):
        env.start(sim)
    with pytest.raises(ConnectError, match="already exists"):
        env.start(sim, "team", "x")
    assert sim.counts["oauth.token"] == 1
