"""OA-03 (no refresh outside the lease) and OA-04 (the lease holder crashes), with real processes on both
dialects. Leases are short here (1.5 s instead of 30 s) through the token client's configuration; the
holder is stopped at a named point by `cosmogen.testing.token_client` (a subclass, not a product branch).

OA-03
- The holder stalls 5 s after taking the lease, past the waiters' 2.5 s wait timeout and the lease's
  1.5 s TTL: it is alive, so it keeps renewing the lease. The 10 waiters of another process get a retryable
  error (action `wait`) and never refresh; then the holder makes the only token call, and the waiters'
  next try gets its token with no call.
- The holder is SIGSTOPped while holding the lease (a frozen process cannot renew it): after the TTL a
  waiter takes the lease and refreshes; resumed, the old holder finds it lost the lease and sends nothing.
  1 token call, the grant never revoked.

OA-04
- (a) SIGKILL before the token request: after the TTL another process refreshes: exactly 1 call in all,
  the credential valid.
- (b) SIGKILL after the server answered, before the commit: the rotated refresh token died with the
  process, so the next refresh presents a spent one, the server revokes the grant, and the account is
  marked `expired` / `needs_reauth` (a warning in the log is the audit trail), credentials kept.
- The window between the answer and the commit holds no await but the commit (checked on the source).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.reliability.token_support import Contender, Store, grant_account, manager, started_http, store

from cosmogen.domain.capabilities import Action
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.tokens import TokenManager
from cosmogen.store.tables import utcnow
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import Simulator, ThreadedSimulator
from cosmogen.testing.token_client import token_digest

__all__ = ["store"]  # the fixture

TTL_S = 1.5


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator() as server:
        yield server


def test_oa03_waiters_time_out_retryably_while_a_live_holder_stalls(
    store: Store, sim: Simulator, tmp_path: Path
) -> None:
    account_id, grant = grant_account(store, sim)
    holder = Contender(
        store, account_id, 1, tmp_path / "holder.log", stall="after-reread:5", lease_ttl_s=TTL_S
    )
    waiters = Contender(
        store, account_id, 10, tmp_path / "waiters.log", lease_ttl_s=TTL_S, wait_timeout_s=2.5
    )
    try:
        holder.go(1)
        assert holder.line() == "STALLED after-reread"
        waiters.go(2)
        waited = waiters.result()
        assert waited["tokens"] == {} and len(waited["errors"]) == 10
        assert {e["action"] for e in waited["errors"]} == {"wait"}
        assert all("another process is refreshing" in e["message"] for e in waited["errors"])
        assert sim.counts["oauth.token"] == 0  # nobody refreshed without the lease
        # 2.5 s of waiting is past the 1.5 s TTL: the live holder renewed its lease, which is still valid.
        lease = oauth_accounts.stored(store.db, store.vault, account_id)
        assert lease.lease_owner is not None and f":{holder.process.pid}:" in lease.lease_owner
        assert lease.lease_expires_at is not None and lease.lease_expires_at > utcnow()
        held = holder.result()
        assert sim.counts["oauth.token"] == 1
        [digest] = held["tokens"]
        waiters.go(3)
        assert waiters.result() == {"tokens": {digest: 10}, "errors": []}
        assert sim.counts["oauth.token"] == 1
    finally:
        holder.close()
        waiters.close()
    saved = oauth_accounts.stored(store.db, store.vault, account_id)
    assert saved.access_token is not None and token_digest(saved.access_token) == digest
    assert saved.refresh_token != grant.refresh_token and sim.oauth.revocations == []


def test_oa03_a_frozen_holder_loses_the_lease_and_sends_nothing_when_it_wakes(
    store: Store, sim: Simulator, tmp_path: Path
) -> None:
    account_id, _ = grant_account(store, sim)
    holder = Contender(
        store, account_id, 1, tmp_path / "holder.log", stall="after-reread:0.5", lease_ttl_s=TTL_S
    )
    waiters = Contender(store, account_id, 10, tmp_path / "waiters.log", lease_ttl_s=TTL_S, wait_timeout_s=20)
    try:
        holder.go(1)
        assert holder.line() == "STALLED after-reread"
        os.kill(holder.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        waiters.go(2)
        took_over = waiters.result()
        assert time.monotonic() - started >= TTL_S * 0.5  # not before the frozen holder's lease lapsed
        [(digest, count)] = took_over["tokens"].items()
        assert count == 10 and took_over["errors"] == [] and sim.counts["oauth.token"] == 1
        os.kill(holder.process.pid, signal.SIGCONT)
        assert holder.result() == {"tokens": {digest: 1}, "errors": []}  # it used theirs
        assert sim.counts["oauth.token"] == 1 and sim.oauth.revocations == []
    finally:
        if holder.process.poll() is None:
            os.kill(holder.process.pid, signal.SIGCONT)
        holder.close()
        waiters.close()
    assert "lost the refresh lease before sending" in holder.stderr()


def test_oa04a_holder_killed_before_the_request_another_process_refreshes_after_the_ttl(
    store: Store, sim: Simulator, tmp_path: Path
) -> None:
    account_id, grant = grant_account(store, sim)
    holder = Contender(
        store, account_id, 1, tmp_path / "holder.log", stall="after-reread:inf", lease_ttl_s=TTL_S
    )
    try:
        holder.go(1)
        assert holder.line() == "STALLED after-reread"
        holder.process.kill()
        holder.process.wait()
    finally:
        holder.close()
    dead = oauth_accounts.stored(store.db, store.vault, account_id).lease_owner
    assert dead is not None and f":{holder.process.pid}:" in dead

    async def survivor() -> str:
        http = await started_http()
        tokens = manager(store, http, lease_ttl=timedelta(seconds=TTL_S), wait_timeout=timedelta(seconds=20))
        try:
            return (await tokens.access_token(account_id)).reveal()
        finally:
            await tokens.close()
            await http.close()

    token = asyncio.run(survivor())
    assert sim.counts["oauth.token"] == 1  # the dead holder never sent; exactly 1 more call
    assert token != grant.access_token and sim.oauth.check_access_token(token) == "valid"
    saved = oauth_accounts.stored(store.db, store.vault, account_id)
    assert saved.access_token == token and saved.status == "connected" and saved.lease_owner is None
    family = sim.oauth.family_of(token)
    assert family is not None and saved.refresh_token == family.current_refresh


def test_oa04b_holder_killed_between_answer_and_commit_loses_the_grant_visibly(
    store: Store, sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account_id, grant = grant_account(store, sim)
    holder = Contender(
        store, account_id, 1, tmp_path / "holder.log", stall="after-response:inf", lease_ttl_s=TTL_S
    )
    try:
        holder.go(1)
        assert holder.line() == "STALLED after-response"
        holder.process.kill()
        holder.process.wait()
    finally:
        holder.close()
    assert sim.counts["oauth.token"] == 1  # the server rotated; the new refresh token died with it

    async def survivor() -> None:
        http = await started_http()
        tokens = manager(store, http, lease_ttl=timedelta(seconds=TTL_S), wait_timeout=timedelta(seconds=20))
        try:
            with pytest.raises(AccountUnavailable, match="must be reconnected") as refused:
                await tokens.access_token(account_id)
            assert refused.value.action is Action.RECONNECT
        finally:
            await tokens.close()
            await http.close()

    with caplog.at_level(logging.WARNING, logger="cosmogen.integrations.tokens"):
        asyncio.run(survivor())
    assert sim.counts["oauth.token"] == 2
    family = sim.oauth.family_of(grant.refresh_token)
    assert family is not None and sim.oauth.revocations == [(family.id, "reuse")]
    saved = oauth_accounts.stored(store.db, store.vault, account_id)
    assert saved.status == "expired" and saved.last_error is not None
    assert saved.last_error["code"] == "needs_reauth" and saved.last_error["action"] == "reconnect"
    assert saved.fields == ["access_token", "client_secret", "refresh_token"]  # kept for the person
    audit = [r.getMessage() for r in caplog.records if "needs to be reconnected" in r.getMessage()]
    assert len(audit) == 1 and account_id in audit[0] and grant.refresh_token not in audit[0]


def test_oa04_no_await_between_the_token_answer_and_the_commit() -> None:
    source = textwrap.dedent(inspect.getsource(TokenManager._exchange))
    awaited = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Await)]
    awaited.sort(key=lambda node: (node.lineno, node.col_offset))  # source order
    calls = [ast.unparse(node.value) for node in awaited]
    answer = next(i for i, call in enumerate(calls) if call.startswith("token_call("))
    after = calls[answer + 1 :]
    assert after == ["asyncio.to_thread(self._commit, stored, answer)"], calls
    assert not inspect.iscoroutinefunction(TokenManager._commit)  # the commit itself cannot yield
