"""Which accounts a binding may use, by environment. Pure.

A provider binding runs in the `sandbox` environment (the default) or in `production`. A production
binding refuses sandbox accounts (they point at test tenants or the simulator) and accounts that were
never verified (no successful test call or connect), so a universe promoted to production cannot quietly
post with a test account, nor with a key nobody has checked (seed-spec §2.8). A sandbox binding may use
any connected account: trying a flow against a real account is a normal step before promoting it.
"""

from __future__ import annotations

from typing import Literal

Environment = Literal["sandbox", "production"]


def tier_refusal(environment: Environment, account: str, tier: str, verified: bool) -> str | None:
    """Why a binding in `environment` must not use this account, or None when it may."""
    if environment != "production":
        return None
    if tier != "production":
        return (
            f"account {account!r} is a {tier} account and this binding runs in production: pick a "
            "production account, or set the binding's environment to sandbox"
        )
    if not verified:
        return (
            f"account {account!r} has never been verified and this binding runs in production: test "
            "or reconnect the account first"
        )
    return None
