"""When an OAuth access token is refreshed, and what a refresh's outcome does to the account. No I/O, no
clock, no randomness: the token manager (integrations/tokens.py) passes `now` and a jitter draw.

- `next_step`: use the stored token, refresh it, wait out a backoff, or ask for a reconnect. A token is
  refreshed `window` (5 minutes) before it expires; a 401 from a provider forces one refresh.
- `retry_at`: after a transient token-endpoint failure (5xx, 429, timeout) the grant is kept and the
  next attempt waits an exponential, capped, jittered delay (reliability.md OA-06).
- `refusal_effect`: what a refusal means for the account. `invalid_grant` is terminal only once a re-read
  of storage shows the refresh token we used is still the stored one (OA-05); otherwise someone else
  rotated it and the stored one is used.
- `token_rejected`: which provider answers mean "this access token is refused" (OA-07).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cosmogen.domain.oauth import DEFAULT_REFRESH_WINDOW, RefusalKind, refresh_due

NEEDS_REAUTH = "needs_reauth"
REFRESH_FAILED_TRANSIENT = "refresh_failed_transient"
OAUTH_CLIENT_ERROR = "oauth_client_error"


class PolicyError(ValueError):
    """A token-refresh setting that cannot work; the message names it and the allowed range."""


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """How the token manager refreshes. Defaults are the product's; tests shorten the lease and waits.

    `lease_ttl` bounds how long a crashed holder blocks others; a live holder renews its lease every
    third of it while its token request is in flight, so a slow authorization server does not let a
    second process present the same refresh token (which a rotating server answers by revoking the
    grant). `wait_timeout` is how long a caller waits for another process's refresh before it gets a
    retryable error (it never refreshes without the lease).
    """

    window: timedelta = DEFAULT_REFRESH_WINDOW
    lease_ttl: timedelta = timedelta(seconds=30)
    wait_timeout: timedelta = timedelta(seconds=15)
    poll_interval: timedelta = timedelta(milliseconds=50)
    backoff_base: timedelta = timedelta(seconds=5)
    backoff_cap: timedelta = timedelta(minutes=5)
    refresher_every: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        zero = timedelta(0)
        for name in ("lease_ttl", "wait_timeout", "poll_interval", "backoff_base", "refresher_every"):
            if getattr(self, name) <= zero:
                raise PolicyError(f"token refresh setting {name} must be a positive duration")
        if self.window < zero:
            raise PolicyError("token refresh setting window must not be negative (0: refresh at expiry)")
        if self.backoff_cap < self.backoff_base:
            raise PolicyError("token refresh setting backoff_cap must be at least backoff_base")
        if self.poll_interval >= self.wait_timeout:
            raise PolicyError("token refresh setting poll_interval must be shorter than wait_timeout")


class Step(StrEnum):
    USE = "use"  # the stored access token is good (or good enough while a backoff runs)
    REFRESH = "refresh"  # take the lease and refresh
    BACKOFF = "backoff"  # refreshing failed lately and the token is unusable: retry later
    RECONNECT = "reconnect"  # nothing to refresh with, or the account is not connected


@dataclass(frozen=True, slots=True)
class TokenView:
    """What the decision needs from an account row and its vault fields (never the values)."""

    status: str
    expires_at: datetime | None
    retry_at: datetime | None
    has_access: bool
    has_refresh: bool


def next_step(now: datetime, view: TokenView, policy: RefreshPolicy, *, rejected: bool = False) -> Step:
    """What to do for a caller that needs the access token. `rejected`: the provider refused the token
    the caller holds and it is still the stored one (a 401), so a refresh is due whatever the expiry."""
    if view.status != "connected":
        return Step.RECONNECT
    expired = view.expires_at is not None and now >= view.expires_at
    due = rejected or not view.has_access or refresh_due(now, view.expires_at, policy.window)
    if not due:
        return Step.USE
    if not view.has_refresh:
        # Nothing to refresh with: a token that still works is used until it expires.
        return Step.RECONNECT if (expired or rejected or not view.has_access) else Step.USE
    if view.retry_at is not None and now < view.retry_at:
        return Step.BACKOFF if (expired or rejected or not view.has_access) else Step.USE
    return Step.REFRESH


def backoff_delay(failures: int, policy: RefreshPolicy, jitter: float) -> timedelta:
    """The wait after `failures` consecutive transient failures: base * 2^(failures-1), capped, then
    scaled into [half, full] by `jitter` in [0, 1] (so processes that failed together spread out)."""
    if failures < 1:
        raise ValueError("backoff_delay is for at least one failure")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter is a draw in [0, 1]")
    exponent = min(failures - 1, 30)  # 2**30 bases is far past any cap; avoids huge numbers
    full: timedelta = min(policy.backoff_cap, policy.backoff_base * (2**exponent))
    return full * (0.5 + 0.5 * jitter)


def retry_at(
    now: datetime, failures: int, expires_at: datetime | None, policy: RefreshPolicy, jitter: float
) -> datetime:
    """When the next refresh may be tried. Not later than the token's expiry while it is still valid,
    so a backoff never lets a refreshable token lapse unattempted."""
    at = now + backoff_delay(failures, policy, jitter)
    if expires_at is not None and now < expires_at < at:
        return expires_at
    return at


class RefusalEffect(StrEnum):
    USE_STORED = "use_stored"  # someone else rotated the grant: use what storage holds now
    NEEDS_REAUTH = "needs_reauth"  # the grant is gone: status expired, credentials kept, reconnect
    BACKOFF = "backoff"  # keep the grant and status, count the failure, retry later
    CLIENT_ERROR = "client_error"  # the app's OAuth settings are wrong: keep the grant, say what to fix


def refusal_effect(kind: RefusalKind, storage_changed: bool) -> RefusalEffect:
    """What a token-endpoint refusal does. `storage_changed`: a re-read after the refusal found another
    refresh token (or version) than the one we sent. Only an unchanged invalid_grant is terminal."""
    if kind is RefusalKind.INVALID_GRANT:
        return RefusalEffect.USE_STORED if storage_changed else RefusalEffect.NEEDS_REAUTH
    if kind is RefusalKind.TRANSIENT:
        return RefusalEffect.BACKOFF
    return RefusalEffect.CLIENT_ERROR


def needs_reauth_error(now: datetime, reason: str) -> dict[str, Any]:
    """accounts.last_error when the grant is lost: what happened and what to do (never a token)."""
    return {
        "code": NEEDS_REAUTH,
        "message": f"the authorization server no longer accepts this account's grant ({reason}); "
        "reconnect the account",
        "action": "reconnect",
        "at": now.isoformat(),
    }


def transient_error(now: datetime, failures: int, next_try: datetime, reason: str) -> dict[str, Any]:
    return {
        "code": REFRESH_FAILED_TRANSIENT,
        "message": f"refreshing the access token failed {failures} time(s) in a row ({reason}); "
        f"the grant is kept and the next attempt is at {next_try.isoformat()}",
        "action": "wait",
        "failures": failures,
        "retry_at": next_try.isoformat(),
        "at": now.isoformat(),
    }


def client_error(now: datetime, next_try: datetime, reason: str) -> dict[str, Any]:
    return {
        "code": OAUTH_CLIENT_ERROR,
        "message": f"the authorization server refused this app's OAuth client ({reason}); fix the "
        "account's oauth settings or client secret (the grant is kept)",
        "action": "fix_setting",
        "retry_at": next_try.isoformat(),
        "at": now.isoformat(),
    }


# Provider answers that mean "this access token is not accepted" beyond a plain 401: Slack's 200
# `token_expired`/`invalid_auth`, and Graph's code 190 (invalid OAuth access token).
_REJECTED_CODES = frozenset({"slack.token_expired", "slack.invalid_auth", "instagram.190"})


def token_rejected(status: int | None, failure_code: str | None) -> bool:
    """True when a provider answer says the access token was refused, so one refresh and one retry are
    worth it (a token with no expiry is only ever refreshed this way)."""
    return status == 401 or failure_code in _REJECTED_CODES
