"""PBT-03: the token manager against a model (real simulator, real SQLite database, virtual clock).

Two token managers (two "processes": separate in-process single flights, one shared lease) serve an
account through random sequences of: advancing the clock, concurrent gets on both managers, a provider
refusing the current token (a 401), the authorization server switching refresh-token rotation on or off,
failing transiently (500/502/503/429, scripted for its next request), revoking the grant, and another
writer refreshing and saving the grant behind the managers' backs.

The model, written independently of domain/tokens.py, predicts for every get: how many token calls
happen (0 or 1), and what every caller gets (the stored token, a retryable error, or a reconnect), plus
the stored status, failure count, retry time and expiry. Invariants: the token-endpoint call count
equals the model's; the grant is never revoked except by the server's own `revoke` rule (never "reuse",
i.e. never by our own race).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tests.reliability.token_support import LOOPBACK

from cosmogen.domain.oauth import OAuthClientConfig, TokenGrant
from cosmogen.domain.tokens import RefreshPolicy
from cosmogen.integrations.accounts import VaultOpener
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.oauth import token_call
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.tokens import TokenManager
from cosmogen.integrations.vault import Vault
from cosmogen.store import Database, migrate
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, ManualClock, Simulator

T = TypeVar("T")
START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
LIFETIME = timedelta(seconds=3600)  # the simulator's expires_in


def model_backoff(failures: int) -> timedelta:
    """5 s doubling, capped at 5 min (the managers draw jitter 1.0: the full delay)."""
    return timedelta(seconds=min(300, 5 * 2 ** (failures - 1)))


@dataclass
class Model:
    now: datetime
    expires_at: datetime
    status: str = "connected"
    failures: int = 0
    retry_at: datetime | None = None
    revoked: bool = False  # at the server
    pending_faults: int = 0  # scripted transient answers not yet used
    calls: int = 0  # token-endpoint calls, ours and the other writer's
    happened: str = "none"  # what the last get did at the server: none, refreshed, transient, invalid_grant

    def get(self, rejected: bool) -> str:
        """What one burst of concurrent gets does: 'token' (the stored one, perhaps new), 'wait' or
        'reconnect'."""
        self.happened = "none"
        if self.status != "connected":
            return "reconnect"
        expired = self.now >= self.expires_at
        due = rejected or self.now >= self.expires_at - WINDOW
        if not due:
            return "token"
        if self.retry_at is not None and self.now < self.retry_at:
            return "wait" if (expired or rejected) else "token"
        self.calls += 1  # exactly one refresh for all callers of both managers
        if self.pending_faults:
            self.pending_faults -= 1
            self.happened = "transient"
            self.failures += 1
            at = self.now + model_backoff(self.failures)
            self.retry_at = self.expires_at if self.now < self.expires_at < at else at
            return "wait" if (expired or rejected) else "token"
        if self.revoked:
            self.happened = "invalid_grant"
            self.status = "expired"
            return "reconnect"
        self.happened = "refreshed"
        self.expires_at = self.now + LIFETIME
        self.failures, self.retry_at = 0, None
        return "token"


class Runner:
    """One event loop for the simulator, the managers and the rules (rules are synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@dataclass
class World:
    runner: Runner
    sim: Simulator
    sim_clock: ManualClock
    db: Database
    vault: Vault
    http: HttpClient
    seen: Counter[str] = field(default_factory=Counter)  # outcomes of bursts, across examples


class TokenModel(RuleBasedStateMachine):
    def __init__(self, world: World) -> None:
        super().__init__()
        self.w = world
        self.w.sim.faults.clear()
        self.w.sim.oauth.rotate_refresh_tokens = True
        self.clock = {"now": START}
        self.base_calls = self.w.sim.counts["oauth.token"]
        grant = self.w.sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
        family = self.w.sim.oauth.family_of(grant.access_token)
        assert family is not None
        self.family = family
        self.account_id = oauth_accounts.connect(
            self.w.db, self.w.vault, sim_url=self.w.sim.url, client_id=DEFAULT_CLIENT_ID,
            client_secret=DEFAULT_CLIENT_SECRET, access_token=grant.access_token,
            refresh_token=grant.refresh_token, expires_at=START + timedelta(minutes=10),
            name=f"acct-{grant.access_token}",
        )  # fmt: skip
        self.model = Model(now=START, expires_at=START + timedelta(minutes=10))
        policy = RefreshPolicy(wait_timeout=timedelta(seconds=20))
        self.managers = [
            TokenManager(
                self.w.db,
                VaultOpener(lambda: self.w.vault),
                self.w.http,
                policy=policy,
                now=lambda: self.clock["now"],
                jitter=lambda: 1.0,
            )
            for _ in range(2)
        ]

    def teardown(self) -> None:
        for manager in self.managers:
            self.w.runner.run(manager.close())

    def stored(self) -> oauth_accounts.StoredAccount:
        return oauth_accounts.stored(self.w.db, self.w.vault, self.account_id)

    # --- rules ------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 5, 20, 60, 240, 299, 301, 600, 3000]))
    def advance_clock(self, seconds: int) -> None:
        self.clock["now"] += timedelta(seconds=seconds)
        self.model.now = self.clock["now"]
        self.w.sim_clock.advance(seconds)

    @rule(offset=st.sampled_from([-301, -299, -60, -1, 0, 1, 30, 400]))
    def advance_to_around_expiry(self, offset: int) -> None:
        """The clock to the stored expiry plus `offset` seconds (if that is ahead): the window's edges."""
        target = self.model.expires_at + timedelta(seconds=offset)
        if target > self.clock["now"]:
            self.advance_clock(int((target - self.clock["now"]).total_seconds()))

    @rule(
        first=st.integers(0, 6),
        second=st.integers(1, 6),
        refused=st.sampled_from([False, False, False, True]),  # 1 in 4: a provider refused the token
    )
    def concurrent_get(self, first: int, second: int, refused: bool) -> None:
        self._burst(first, second, rejected=refused)

    @rule(on=st.booleans())
    def as_rotates(self, on: bool) -> None:
        self.w.sim.oauth.rotate_refresh_tokens = on

    @rule(status=st.sampled_from([500, 502, 503, 429]))
    def as_fails_transiently(self, status: int) -> None:
        fault = Fault.rate_limited(retry_after=1) if status == 429 else Fault.server_error(status)
        self.w.sim.inject(fault, "oauth.token", times=1)
        self.model.pending_faults += 1

    @precondition(lambda self: not self.model.revoked)
    @rule()
    def as_revokes(self) -> None:
        refresh = self.stored().refresh_token
        assert refresh is not None and self.w.sim.oauth.revoke_family(refresh)
        self.model.revoked = True

    @precondition(
        lambda self: (
            not self.model.revoked and self.model.pending_faults == 0 and self.model.status == "connected"
        )
    )
    @rule()
    def external_writer_rotates(self) -> None:
        """Another writer refreshes with the stored refresh token and saves the answer (version bump)."""
        refresh = self.stored().refresh_token
        assert refresh is not None
        config = OAuthClientConfig(
            DEFAULT_CLIENT_ID,
            f"{self.w.sim.url}/oauth/authorize",
            f"{self.w.sim.url}/oauth/token",
            None,
            None,
        )
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        answer = self.w.runner.run(
            token_call(self.w.http, config, Secret(DEFAULT_CLIENT_SECRET), form, lambda: self.clock["now"])
        )
        assert isinstance(answer, TokenGrant), answer
        oauth_accounts.store_grant(
            self.w.db,
            self.w.vault,
            self.account_id,
            answer.access_token,
            answer.refresh_token,
            answer.expires_at,
        )
        self.model.calls += 1
        self.model.expires_at = self.model.now + LIFETIME

    def _burst(self, first: int, second: int, *, rejected: bool) -> None:
        before = self.stored()
        refused = Secret(before.access_token) if rejected and before.access_token else None
        expected = self.model.get(rejected)

        async def ask(manager: TokenManager) -> str:
            try:
                return (await manager.access_token(self.account_id, rejected=refused)).reveal()
            except AccountUnavailable as exc:
                return f"error:{exc.action.value}"

        async def burst() -> list[str]:
            asks = [ask(self.managers[0]) for _ in range(first)] + [
                ask(self.managers[1]) for _ in range(second)
            ]
            return list(await asyncio.gather(*asks))

        got = self.w.runner.run(burst())
        outcome = f"{'refused' if rejected else 'get'}: {self.model.happened} -> {expected}"
        event(outcome)
        self.w.seen[self.model.happened] += 1
        after = self.stored()
        if expected == "token":
            assert set(got) == {after.access_token}, (got, self.model)
        else:
            assert set(got) == {f"error:{expected}"}, (got, expected, self.model)

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def calls_match_the_model(self) -> None:
        assert self.w.sim.counts["oauth.token"] - self.base_calls == self.model.calls, self.model

    @invariant()
    def storage_matches_the_model(self) -> None:
        saved = self.stored()
        assert saved.status == self.model.status
        assert saved.refresh_failures == self.model.failures
        assert saved.refresh_retry_at == self.model.retry_at
        assert saved.token_expires_at == self.model.expires_at
        assert saved.lease_owner is None  # nobody holds the lease between rules
        assert saved.fields == ["access_token", "client_secret", "refresh_token"]  # never deleted

    @invariant()
    def never_revoked_by_our_own_race(self) -> None:
        assert self.family.revoked in (None, "admin"), self.w.sim.oauth.revocations


def test_pbt03_the_token_manager_matches_its_model(tmp_path: Path) -> None:
    runner = Runner()
    sim_clock = ManualClock(1_000.0)
    sim = Simulator(clock=sim_clock)
    runner.run(sim.start())
    http = HttpClient(LOOPBACK)
    runner.run(http.start())
    db = Database.open(url=f"sqlite:///{tmp_path / 'pbt03.db'}")
    try:
        migrate.upgrade(db)
        vault = oauth_accounts.open_vault(db, oauth_accounts.new_keyring())
        world = World(runner, sim, sim_clock, db, vault, http)
        run_state_machine_as_test(
            lambda: TokenModel(world),  # type: ignore[arg-type]  # hypothesis accepts any factory
            settings=settings(
                max_examples=60,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
        # Not a vacuous run: the server was really asked, and failed, along the way.
        assert world.seen["refreshed"] > 0 and world.seen["transient"] > 0, world.seen
        print(f"\nPBT-03 outcomes of bursts: {dict(world.seen)}")
    finally:
        db.close()
        runner.run(http.close())
        runner.run(sim.close())
        runner.loop.close()
