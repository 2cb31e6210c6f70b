"""The stream's subscription and cursor parsing, and which events a subscription matches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cosmogen.domain.events import (
    LEVELS,
    BadSubscription,
    Envelope,
    Subscription,
    level_of,
    parse_cursor,
    parse_subscription,
)


def _event(
    universe: str = "u1", run: str = "r1", workspace: str = "default", kind: str = "run.started"
) -> Envelope:
    return Envelope(7, kind, workspace, universe, run, 1, datetime(2026, 1, 1, tzinfo=UTC), {"a": 1})


def test_queries_become_subscriptions() -> None:
    assert parse_subscription("w", {}) == (Subscription("w"), None)
    assert parse_subscription("w", {"universe": "u1", "after": "0"}) == (Subscription("w", "u1"), 0)
    assert parse_subscription("w", {"run": "r1", "after": "42", "ticket": "t"}) == (
        Subscription("w", None, "r1"),
        42,
    )
    assert parse_subscription("w", {"level": "warning"}) == (Subscription("w", level="warning"), None)
    assert parse_cursor("") is None and parse_cursor(None) is None


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"universe": "u", "run": "r"}, "not both"),
        ({"workspace": "other"}, "unknown query parameter"),
        ({"after": "-1"}, "whole number"),
        ({"after": "1e3"}, "whole number"),
        ({"after": "٣"}, "whole number"),  # a non-ASCII digit
        ({"after": "9" * 20}, "whole number"),
        ({"run": "x" * 201}, "not an id of ours"),
        ({"run": "r\n1"}, "not an id of ours"),
        ({"level": "debug"}, "one of info, warning, error"),
    ],
)
def test_bad_queries_say_what_to_change(query: dict[str, str], says: str) -> None:
    with pytest.raises(BadSubscription, match=says):
        parse_subscription("w", query)


def test_a_subscription_never_matches_another_workspace() -> None:
    event = _event()
    assert Subscription("default").matches(event)
    assert Subscription("default", "u1").matches(event) and not Subscription("default", "u2").matches(event)
    assert Subscription("default", None, "r1").matches(event)
    assert not Subscription("default", None, "r2").matches(event)
    assert not Subscription("other").matches(event) and not Subscription("other", "u1", "r1").matches(event)


def test_the_envelope_is_versioned_and_complete() -> None:
    assert _event().to_json() == {
        "v": 1, "id": 7, "type": "run.started", "workspace": "default", "universe": "u1", "run": "r1",
        "seq": 1, "at": "2026-01-01T00:00:00+00:00", "level": "info", "data": {"a": 1},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "level"),
    [
        ("run.started", "info"),
        ("node.finished", "info"),
        ("effect.succeeded", "info"),
        ("run.succeeded", "info"),
        ("effect.waiting", "warning"),
        ("effect.ambiguous", "warning"),
        ("run.needs_attention", "warning"),
        ("effect.failed", "error"),
        ("account.error", "error"),
        ("run.failed", "error"),
        ("something.new", "info"),
    ],
)
def test_levels_come_from_the_type_and_a_subscription_keeps_its_level_and_worse(
    kind: str, level: str
) -> None:
    assert level_of(kind) == level
    event = _event(kind=kind)
    assert event.to_json()["level"] == level
    for wanted in LEVELS:
        subscription = Subscription("default", level=wanted)
        assert subscription.matches(event) == (LEVELS.index(level) >= LEVELS.index(wanted))
        types = subscription.types
        assert types is None if wanted == "info" else (kind in types) == subscription.matches(event)
