"""OA-14: the scopes each OAuth provider's connection asks for, against a reviewed, checked-in snapshot.

Any change to a requested scope set (a capability gains a scope, a provider is added, a grant scope
changes) fails this test until the snapshot is updated on purpose:

    COSMOGEN_UPDATE_SCOPE_SNAPSHOT=1 .venv/bin/pytest tests/reliability/test_oa14_scope_snapshot.py

then review `git diff tests/reliability/snapshots/oauth_scopes.json` (every scope is access a person
grants the studio) and commit it with the change that needs it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cosmogen.domain.capabilities import default_registry
from cosmogen.domain.oauth import OAuthError, requested_scopes, scope_separator

SNAPSHOT = Path(__file__).parent / "snapshots" / "oauth_scopes.json"
HOW = (
    "the requested OAuth scopes changed. If that is intended, run "
    "`COSMOGEN_UPDATE_SCOPE_SNAPSHOT=1 .venv/bin/pytest tests/reliability/test_oa14_scope_snapshot.py`, "
    "review `git diff tests/reliability/snapshots/oauth_scopes.json` and commit it with the change"
)


def current() -> dict[str, Any]:
    registry = default_registry()
    return {
        provider.id: {
            "scopes": list(requested_scopes(registry, provider.id)),
            "separator": scope_separator(provider.id),
        }
        for provider in sorted(registry.providers.values(), key=lambda p: p.id)
        if "oauth2" in provider.auth_kinds
    }


def test_oa14_requested_scopes_equal_the_reviewed_snapshot() -> None:
    now = current()
    if os.environ.get("COSMOGEN_UPDATE_SCOPE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")
    reviewed = json.loads(SNAPSHOT.read_text())
    assert now == reviewed, HOW


def test_the_snapshot_covers_every_oauth_provider_and_every_capability_scope() -> None:
    registry = default_registry()
    reviewed = json.loads(SNAPSHOT.read_text())
    for capability in registry.capabilities.values():
        if "oauth2" in registry.providers[capability.provider].auth_kinds:
            assert set(capability.scopes) <= set(reviewed[capability.provider]["scopes"]), capability.id


def test_requested_scopes_are_sorted_unique_and_extra_ones_are_checked() -> None:
    registry = default_registry()
    assert requested_scopes(registry, "x", ["tweet.read", "dm.read"]) == (
        "dm.read", "offline.access", "tweet.read", "tweet.write", "users.read",
    )  # fmt: skip
    assert requested_scopes(registry, "http") == ()
    for bad in ["", "a b", "a,b", 'a"', "a\\b", "a\tb"]:
        with pytest.raises(OAuthError, match="one word"):
            requested_scopes(registry, "http", [bad])
