"""The token manager's pure decisions: when to refresh (OA-07's frozen clock around expiry), the backoff
after transient failures (OA-06), what a refusal does to the account (OA-05), which provider answers
mean "token refused"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmogen.domain.oauth import RefusalKind
from cosmogen.domain.tokens import (
    PolicyError,
    RefreshPolicy,
    RefusalEffect,
    Step,
    TokenView,
    backoff_delay,
    next_step,
    refusal_effect,
    retry_at,
    token_rejected,
)

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # the token's expiry
POLICY = RefreshPolicy()


def view(**changes: object) -> TokenView:
    base: dict[str, object] = {
        "status": "connected",
        "expires_at": T,
        "retry_at": None,
        "has_access": True,
        "has_refresh": True,
    }
    return TokenView(**{**base, **changes})  # type: ignore[arg-type]


def test_oa07_no_refresh_at_t_minus_5_01_and_a_refresh_at_t_minus_4_59() -> None:
    assert next_step(T - timedelta(minutes=5, seconds=1), view(), POLICY) is Step.USE
    assert next_step(T - timedelta(minutes=4, seconds=59), view(), POLICY) is Step.REFRESH
    assert next_step(T - timedelta(minutes=5), view(), POLICY) is Step.REFRESH  # the boundary is due
    assert next_step(T + timedelta(hours=1), view(), POLICY) is Step.REFRESH  # long expired: still refresh


def test_the_window_is_configurable() -> None:
    two = RefreshPolicy(window=timedelta(minutes=2))
    assert next_step(T - timedelta(minutes=3), view(), two) is Step.USE
    assert next_step(T - timedelta(minutes=1), view(), two) is Step.REFRESH


def test_a_token_without_expiry_is_refreshed_only_when_a_provider_refused_it() -> None:
    endless = view(expires_at=None)
    assert next_step(T + timedelta(days=400), endless, POLICY) is Step.USE
    assert next_step(T, endless, POLICY, rejected=True) is Step.REFRESH


def test_without_a_refresh_token_a_valid_token_is_used_and_an_expired_one_needs_a_reconnect() -> None:
    lone = view(has_refresh=False)
    assert next_step(T - timedelta(minutes=1), lone, POLICY) is Step.USE
    assert next_step(T, lone, POLICY) is Step.RECONNECT
    assert next_step(T - timedelta(hours=1), lone, POLICY, rejected=True) is Step.RECONNECT


def test_an_account_that_is_not_connected_is_never_refreshed() -> None:
    for status in ("pending", "expired", "error", "disabled"):
        assert next_step(T, view(status=status), POLICY) is Step.RECONNECT


def test_during_a_backoff_a_still_valid_token_is_used_and_an_unusable_one_waits() -> None:
    backing = view(retry_at=T + timedelta(minutes=1))
    assert next_step(T - timedelta(minutes=2), backing, POLICY) is Step.USE
    assert next_step(T, backing, POLICY) is Step.BACKOFF  # expired meanwhile
    assert next_step(T - timedelta(minutes=2), backing, POLICY, rejected=True) is Step.BACKOFF
    assert next_step(T + timedelta(minutes=1), backing, POLICY) is Step.REFRESH  # the backoff is over


def test_no_access_token_at_all_is_refreshed_from_the_refresh_token() -> None:
    assert next_step(T - timedelta(hours=1), view(has_access=False), POLICY) is Step.REFRESH
    assert next_step(T - timedelta(hours=1), view(has_access=False, has_refresh=False), POLICY) is (
        Step.RECONNECT
    )


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    full = [backoff_delay(n, POLICY, 1.0) for n in range(1, 10)]
    assert full[:4] == [timedelta(seconds=s) for s in (5, 10, 20, 40)]
    assert max(full) == POLICY.backoff_cap and full[-1] == POLICY.backoff_cap
    assert backoff_delay(3, POLICY, 0.0) == timedelta(seconds=10)  # jitter keeps at least half


@given(failures=st.integers(1, 10_000), jitter=st.floats(0.0, 1.0))
def test_backoff_is_always_within_half_base_and_the_cap(failures: int, jitter: float) -> None:
    delay = backoff_delay(failures, POLICY, jitter)
    assert POLICY.backoff_base / 2 <= delay <= POLICY.backoff_cap


def test_a_retry_never_lands_after_a_still_valid_token_expires() -> None:
    soon = T - timedelta(seconds=3)
    assert retry_at(soon, 5, T, POLICY, 1.0) == T  # 80 s would be past the expiry
    assert retry_at(T, 1, T, POLICY, 1.0) == T + timedelta(seconds=5)  # already expired: plain backoff
    assert retry_at(T, 1, None, POLICY, 1.0) == T + timedelta(seconds=5)


def test_bad_inputs_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="at least one failure"):
        backoff_delay(0, POLICY, 0.5)
    with pytest.raises(ValueError, match="jitter"):
        backoff_delay(1, POLICY, 1.5)
    with pytest.raises(PolicyError, match="lease_ttl must be a positive"):
        RefreshPolicy(lease_ttl=timedelta(0))
    with pytest.raises(PolicyError, match="backoff_cap must be at least backoff_base"):
        RefreshPolicy(backoff_cap=timedelta(seconds=1))
    with pytest.raises(PolicyError, match="poll_interval must be shorter than wait_timeout"):
        RefreshPolicy(wait_timeout=timedelta(milliseconds=10))
    with pytest.raises(PolicyError, match="window must not be negative"):
        RefreshPolicy(window=timedelta(seconds=-1))


def test_oa05_only_an_invalid_grant_confirmed_by_a_re_read_is_terminal() -> None:
    assert refusal_effect(RefusalKind.INVALID_GRANT, storage_changed=False) is RefusalEffect.NEEDS_REAUTH
    assert refusal_effect(RefusalKind.INVALID_GRANT, storage_changed=True) is RefusalEffect.USE_STORED
    for changed in (False, True):
        assert refusal_effect(RefusalKind.TRANSIENT, changed) is RefusalEffect.BACKOFF
        assert refusal_effect(RefusalKind.CLIENT, changed) is RefusalEffect.CLIENT_ERROR


def test_which_provider_answers_mean_the_token_was_refused() -> None:
    assert token_rejected(401, "openai.http_401")
    assert token_rejected(200, "slack.token_expired") and token_rejected(200, "slack.invalid_auth")
    assert token_rejected(400, "instagram.190")
    assert not token_rejected(403, "x.forbidden")  # a missing permission: a new token would not help
    assert not token_rejected(200, "slack.channel_not_found")
    assert not token_rejected(None, None)
