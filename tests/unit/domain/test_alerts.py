"""domain/alerts.py: rule and channel validation, which rules a condition matches, the dedup decision,
retry timing and messages (examples and properties)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmogen.domain import alerts
from cosmogen.domain.alerts import AlertConfigError, RuleKind

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _run(status: str, universe: str = "u1", code: str = "provider") -> alerts.Condition | None:
    return alerts.run_condition(
        status,
        workspace_id="w",
        run_id="r1",
        universe_id=universe,
        universe_name="Orders",
        error={"kind": code, "message": "boom"},
        launch_id="l1",
    )


def test_rules_parse_and_every_problem_is_named() -> None:
    rule = alerts.parse_rule("r", "error_rate", params={"threshold": 0.25, "window_s": 60}, channel_ids=["c"])
    assert (rule.kind, rule.threshold, rule.window_s, rule.min_calls) == (RuleKind.ERROR_RATE, 0.25, 60, 5)
    assert rule.params() == {"threshold": 0.25, "window_s": 60, "min_calls": 5}
    with pytest.raises(AlertConfigError) as caught:
        alerts.parse_rule("r", "sometimes", in_app=False, dedup_window_s=-1, params={"x": 1})
    text = str(caught.value)
    assert "'kind' must be one of run_failed" in text and "'dedup_window_s'" in text
    assert "somewhere to go" in text and "unknown keys ['x']" in text
    with pytest.raises(AlertConfigError, match="threshold"):
        alerts.parse_rule("r", "error_rate", params={"threshold": 1.5})
    with pytest.raises(AlertConfigError, match="threshold"):
        alerts.parse_rule("r", "error_rate")  # an error-rate rule needs its threshold
    with pytest.raises(AlertConfigError, match="different channels"):
        alerts.parse_rule("r", "run_failed", channel_ids=["a", "a"])


def test_run_conditions_and_matching() -> None:
    failed = _run("failed")
    assert failed is not None and failed.kind is RuleKind.RUN_FAILED and failed.subject == "u1:provider"
    assert _run("succeeded") is None and _run("cancelled") is None
    attention = _run("needs_attention")
    assert attention is not None and attention.kind is RuleKind.RUN_NEEDS_ATTENTION
    everywhere = alerts.parse_rule("a", "run_failed")
    only_u2 = alerts.parse_rule("b", "run_failed", universe_id="u2")
    other_kind = alerts.parse_rule("c", "run_needs_attention")
    off = alerts.parse_rule("d", "run_failed", enabled=False)
    assert [r.id for r in alerts.matching_rules([everywhere, only_u2, other_kind, off], failed)] == ["a"]
    assert alerts.render(failed).title == "Run failed in Orders" and "boom" in alerts.render(failed).text


def test_token_conditions() -> None:
    common: dict[str, Any] = {
        "workspace_id": "w",
        "account_id": "a1",
        "account_name": "team",
        "provider": "slack",
        "now": NOW,
        "horizon": timedelta(hours=1),
    }
    lost = alerts.token_condition(
        status="expired",
        last_error={"code": "needs_reauth"},
        token_expires_at=None,
        can_refresh=True,
        **common,
    )
    assert (
        lost is not None
        and lost.kind is RuleKind.GRANT_EXPIRING
        and "reconnected" in alerts.render(lost).title
    )
    transient = alerts.token_condition(
        status="connected",
        last_error={"code": "refresh_failed_transient", "message": "503"},
        token_expires_at=None,
        can_refresh=True,
        **common,
    )
    assert transient is not None and transient.kind is RuleKind.TOKEN_REFRESH_FAILED
    soon = NOW + timedelta(minutes=30)
    ending = alerts.token_condition(
        status="connected", last_error=None, token_expires_at=soon, can_refresh=False, **common
    )
    assert ending is not None and ending.subject == "a1:expiring"
    assert (
        alerts.token_condition(
            status="connected", last_error=None, token_expires_at=soon, can_refresh=True, **common
        )
        is None
    )
    later = NOW + timedelta(hours=2)
    assert (
        alerts.token_condition(
            status="connected", last_error=None, token_expires_at=later, can_refresh=False, **common
        )
        is None
    )


def test_error_rate_and_saturation() -> None:
    args: dict[str, Any] = {
        "workspace_id": "w",
        "universe_id": "u",
        "universe_name": "U",
        "threshold": 0.5,
        "min_calls": 4,
        "window_s": 60,
    }
    assert alerts.error_rate_condition(failed=3, completed=3, **args) is None  # too few calls
    hit = alerts.error_rate_condition(failed=2, completed=4, **args)
    assert hit is not None and hit.facts["rate"] == 0.5 and "50%" in alerts.render(hit).title
    assert alerts.error_rate_condition(failed=1, completed=4, **args) is None
    blocked = alerts.saturation_condition(
        workspace_id="w", key="slack:a1", blocked_until=NOW + timedelta(seconds=5), now=NOW
    )
    assert blocked is not None and blocked.subject == "slack:a1"
    assert alerts.saturation_condition(workspace_id="w", key="k", blocked_until=NOW, now=NOW) is None


def test_channels_validate_and_hide_paths() -> None:
    hook = alerts.parse_channel("webhook", {"url": "https://hooks.example.com/T0/secret-path"})
    assert hook.secret_fields == {"signing_secret"}
    assert alerts.shown_url(hook.config["url"]) == "https://hooks.example.com/…"
    mail = alerts.parse_channel(
        "email", {"host": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"]}
    )
    assert (
        mail.config["port"] == 587 and mail.config["starttls"] is True and mail.secret_fields == {"password"}
    )
    with pytest.raises(AlertConfigError) as caught:
        alerts.parse_channel("email", {"host": "", "from": "nope", "to": [], "password": "x", "ssl": True})
    text = str(caught.value)
    assert "'config.host'" in text and "'config.from'" in text and "'config.to'" in text
    assert "unknown keys ['password']" in text and "secrets go in 'secrets'" in text
    with pytest.raises(AlertConfigError, match="http"):
        alerts.parse_channel("webhook", {"url": "ftp://example.com/x"})
    with pytest.raises(AlertConfigError, match="account_id"):
        alerts.parse_channel("slack", {"channel": "#ops"})
    with pytest.raises(AlertConfigError, match="must be one of webhook, slack, email"):
        alerts.parse_channel("pigeon", {})


@given(
    last=st.one_of(st.none(), st.integers(min_value=0, max_value=10_000)),
    now=st.integers(min_value=0, max_value=10_000),
    window=st.integers(min_value=0, max_value=5_000),
)
def test_dedup_sends_at_most_once_per_window(last: int | None, now: int, window: int) -> None:
    sent = None if last is None else NOW + timedelta(seconds=last)
    at = NOW + timedelta(seconds=now)
    decision = alerts.should_notify(sent, at, window)
    if sent is None or window == 0:
        assert decision
    else:
        assert decision == (at - sent >= timedelta(seconds=window))


@given(
    times=st.lists(st.integers(min_value=0, max_value=3_600), min_size=1, max_size=40),
    window=st.integers(min_value=1, max_value=900),
)
def test_a_repeating_condition_notifies_once_per_window(times: list[int], window: int) -> None:
    """Replaying any arrival times through the decision: sends are at least `window` apart, and every
    arrival is within `window` of a send (nothing goes unreported for longer)."""
    sends: list[int] = []
    for t in sorted(times):
        last = NOW + timedelta(seconds=sends[-1]) if sends else None
        if alerts.should_notify(last, NOW + timedelta(seconds=t), window):
            sends.append(t)
    assert all(b - a >= window for a, b in itertools.pairwise(sends))
    assert all(any(0 <= t - s < window for s in sends) for t in times)


@given(
    kind=st.sampled_from(list(RuleKind)),
    subject=st.text(min_size=1, max_size=20),
    a=st.text(min_size=1, max_size=10),
    b=st.text(min_size=1, max_size=10),
)
def test_dedup_keys_separate_rules_and_subjects(kind: RuleKind, subject: str, a: str, b: str) -> None:
    condition = alerts.Condition(kind, "w", subject)
    assert alerts.dedup_key(a, condition) == alerts.dedup_key(a, alerts.Condition(kind, "w", subject))
    if ":" not in a + b and a != b:
        assert alerts.dedup_key(a, condition) != alerts.dedup_key(b, condition)


def test_retries_back_off_then_give_up() -> None:
    delays = [alerts.retry_delay_s(n) for n in range(1, alerts.MAX_ATTEMPTS)]
    waits = [d for d in delays if d is not None]
    assert len(waits) == len(delays) and waits == sorted(waits) and waits[0] > 0
    assert alerts.retry_delay_s(alerts.MAX_ATTEMPTS) is None
