"""Outbound rate limits as pure decisions: GCRA, the policies, and what a 429 says about waiting.

GCRA (the generic cell rate algorithm) is a token bucket kept as one number per key: the theoretical
arrival time `tat`. With emission interval I = period / requests and tolerance τ = (burst - 1)·I, a
call at `now` may go at max(now, tat - τ), and the key's new tat is max(tat, now) + I (plus a small
arrival allowance, ARRIVAL_ALLOWANCE_S, for requests that reach the provider late). Every decision
here *reserves*: the caller is told when its token is valid (now, or a moment in the future) and the
new tat already counts it, so a waiting caller needs no second decision and many waiters never race
for the same freed token. For any granted times t_i ≤ … ≤ t_j this guarantees

    j - i + 1 ≤ burst + rate · (t_j - t_i)

(the bucket's own bound: a full burst, then `rate` per second). With the allowance a, the same bound
holds for the times requests *arrive* when each arrives within a after its token, which is what a
provider enforcing exactly the same bucket checks. Both are property-tested in tests/unit.

A 429 blocks a key until a time (`blocked_until`); the first grant after a block starts the bucket
empty (no burst), because the provider has just said its own bucket is.

Everything takes `now` (seconds since the epoch) from the caller: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

# A blocked_until further away than this is capped: a bogus or hostile header must not stop a key for
# days; if the provider still refuses after an hour, the next 429 blocks again.
MAX_BLOCK_S = 3600.0

# x-ratelimit-reset values at or above this are Unix times, below it seconds from now (no provider
# announces a wait of 31 years, and no reset time lies before September 2001).
EPOCH_THRESHOLD = 1_000_000_000

# How much later than the calls after it a burst's calls may reach the provider and still fit the
# provider's own bucket, which starts full at the first *arrival*: a burst slowed on its way (new
# connections, a commit, a busy event loop, a provider reading slowly) followed by prompt calls would
# otherwise overrun an exact bucket. Measured: 50 ms absorbed connection set-up on an idle loopback, but
# W3 on the loaded 2-core machine saw bursts arrive 55-65 ms late relative to the next calls and the
# exact bucket refused one call in about 1 round of 6 (the event loop busy starting 100 runs, the
# simulator's process scheduled late); over the internet a burst's new TLS connections do the same.
# A policy with a burst pays it once, when its steady rate starts (W3: 9.2 s instead of 9.0 s).
ARRIVAL_ALLOWANCE_S = 0.2
# With burst 1 every token pays the allowance, so there it stays at most this and a tenth of the interval.
STEADY_ALLOWANCE_S = 0.05

MAX_PERIOD_S = 86_400.0  # "per day" is the longest window providers publish
MAX_COUNT = 1_000_000  # requests or burst: anything larger is a typo, not a limit


def _count_problem(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT:
        return None
    return f"must be a whole number from 1 to {MAX_COUNT:,}, got {value!r}"


def _period_problem(value: object) -> str | None:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= MAX_PERIOD_S
    ):
        return None
    return f"must be more than 0 seconds and at most 1 day, got {value!r}"


class RateLimitSettingsError(ValueError):
    """An account's `rate_limit` settings are invalid; `problems` lists each as "path: what is wrong"."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid rate_limit settings: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Policy:
    """`requests` per `period_s` seconds, with up to `burst` at once after an idle spell."""

    requests: int
    period_s: float
    burst: int = 1

    def __post_init__(self) -> None:
        checks = (
            ("requests", _count_problem(self.requests)),
            ("period_s", _period_problem(self.period_s)),
            ("burst", _count_problem(self.burst)),
        )
        problems = [f"{name}: {problem}" for name, problem in checks if problem is not None]
        if problems:
            raise ValueError("invalid rate-limit policy: " + "; ".join(problems))

    @property
    def interval_s(self) -> float:
        """Seconds between two tokens at the steady rate (GCRA's emission interval)."""
        return self.period_s / self.requests

    @property
    def tolerance_s(self) -> float:
        """How far ahead of its steady-rate time a call may go (GCRA's τ): the burst, in seconds."""
        return (self.burst - 1) * self.interval_s

    @property
    def allowance_s(self) -> float:
        """The arrival allowance used for this policy. With a burst: ARRIVAL_ALLOWANCE_S, at most the
        burst's tolerance; it costs a steady stream nothing, the end of the burst and the steady rate after
        it start that much later (10/s burst 10: 8 at once, then one per 100 ms from 100 ms on, the 100th
        at 9.2 s). With burst 1 every token pays it, so it is STEADY_ALLOWANCE_S, at most a tenth of the
        interval (Slack at 1/s: one call per 1.05 s)."""
        if self.burst > 1:
            return min(ARRIVAL_ALLOWANCE_S, self.tolerance_s)
        return min(STEADY_ALLOWANCE_S, self.interval_s / 10)

    @property
    def rate(self) -> float:
        """Tokens per second at the steady rate."""
        return self.requests / self.period_s

    def describe(self) -> str:
        return f"{self.requests} per {_duration_text(self.period_s)}, burst {self.burst}"


# The seed's limits (seed-spec §3.3), by provider id of the capability registry. Providers not listed
# (e.g. "http", any other API) are unlimited unless an account sets `rate_limit`.
DEFAULT_POLICIES: Mapping[str, Policy] = {
    "openai": Policy(10, 1.0, burst=10),
    "anthropic": Policy(5, 1.0, burst=5),
    "slack": Policy(1, 1.0, burst=1),
    "x": Policy(300, 900.0, burst=5),
    "instagram": Policy(200, 3600.0, burst=3),
}


@dataclass(frozen=True, slots=True)
class Decision:
    """GCRA's answer for one token: store `tat` (the token is then taken) and send at `at`."""

    now: float
    at: float  # when the token is valid: `now` when it may be used at once
    tat: float  # the key's new theoretical arrival time
    blocked: bool  # a 429's block is (part of) the reason to wait

    @property
    def allowed_now(self) -> bool:
        return self.at <= self.now

    @property
    def wait_s(self) -> float:
        return max(self.at - self.now, 0.0)


def decide(
    tat: float | None,
    blocked_until: float | None,
    now: float,
    policy: Policy,
    *,
    allowance_s: float | None = None,
) -> Decision:
    """Reserve one token of a key whose stored state is (`tat`, `blocked_until`); None: never used.

    `allowance_s` (default: `policy.allowance_s`; 0 gives textbook GCRA) counts the token as used as late
    as `at + allowance_s`, so requests reaching the provider up to that late still fit its bucket.
    """
    allowance = policy.allowance_s if allowance_s is None else allowance_s
    current = now if tat is None else tat
    blocked = blocked_until is not None and blocked_until > now
    if blocked_until is not None:
        # Restart empty after a block: the first token is valid at blocked_until, then the steady rate.
        current = max(current, blocked_until + policy.tolerance_s)
    at = max(now, current - policy.tolerance_s)
    return Decision(now=now, at=at, tat=max(current, at + allowance) + policy.interval_s, blocked=blocked)


def reservation_voided(at: float, blocked_until: float | None) -> bool:
    """A token reserved for `at` must not be used: a 429 recorded since then blocks the key past `at`.

    (A block recorded before the reservation is already in it: its `at` is at or after the block's end.)
    """
    return blocked_until is not None and blocked_until > at


# --- keys and policies from settings -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    """What one call is charged to: the limiter key and its policy."""

    key: str
    policy: Policy


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """An account's policies: one for the account as a whole (None: unlimited) and per endpoint."""

    account: Policy | None
    endpoints: Mapping[str, Policy] = field(default_factory=dict)


def limiter_key(provider: str, account: str, endpoint: str | None = None) -> str:
    """The key `provider:account[:endpoint]`; `account` is the account's id (stable across renames)."""
    for name, value in (("provider", provider), ("account", account)):
        if not value or ":" in value:
            raise ValueError(f"rate-limit key: {name} must be non-empty and contain no ':', got {value!r}")
    if endpoint is None:
        return f"{provider}:{account}"
    if not endpoint:
        raise ValueError("rate-limit key: endpoint must be non-empty when given")
    return f"{provider}:{account}:{endpoint}"


def account_limits(provider: str, settings: Mapping[str, Any] | None) -> AccountLimits:
    """The provider's default, overridden by the account settings' `rate_limit` object if present.

    `rate_limit`: {"requests": int, "per": seconds or "1s"/"15m"/"1h"/"1d", "burst": int (default 1),
    "endpoints": {name: {"requests", "per", "burst"}}}. The account-level fields go together (requests
    and per, burst optional) or are all left out to keep the provider's default. Unknown fields are
    errors, so a typo never silently leaves the default in place. Raises RateLimitSettingsError.
    """
    default = DEFAULT_POLICIES.get(provider)
    raw = (settings or {}).get("rate_limit")
    if raw is None:
        return AccountLimits(default)
    if not isinstance(raw, Mapping):
        raise RateLimitSettingsError([f"rate_limit: must be an object, got {_kind(raw)}"])
    problems: list[str] = []
    unknown = sorted(set(raw) - {"requests", "per", "burst", "endpoints"})
    if unknown:
        problems.append(
            f"rate_limit: unknown field(s) {', '.join(map(repr, unknown))}; "
            "allowed: 'requests', 'per', 'burst', 'endpoints'"
        )
    account = default
    if any(name in raw for name in ("requests", "per", "burst")):
        account = _parse_policy(raw, "rate_limit", problems)
    endpoints: dict[str, Policy] = {}
    raw_endpoints = raw.get("endpoints", {})
    if not isinstance(raw_endpoints, Mapping):
        problems.append(
            f"rate_limit.endpoints: must be an object of name -> policy, got {_kind(raw_endpoints)}"
        )
        raw_endpoints = {}
    for name, value in raw_endpoints.items():
        path = f"rate_limit.endpoints.{name}"
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{path}: an endpoint name must be a non-empty string")
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{path}: must be an object with requests, per and burst, got {_kind(value)}")
            continue
        extra = sorted(set(value) - {"requests", "per", "burst"})
        if extra:
            problems.append(
                f"{path}: unknown field(s) {', '.join(map(repr, extra))}; allowed: 'requests', 'per', 'burst'"
            )
        policy = _parse_policy(value, path, problems)
        if policy is not None:
            endpoints[name] = policy
    if problems:
        raise RateLimitSettingsError(problems)
    return AccountLimits(account, endpoints)


def limit_for(
    provider: str, account: str, settings: Mapping[str, Any] | None, endpoint: str | None = None
) -> Limit | None:
    """The key and policy one call is charged to; None when neither provider nor account sets a limit.

    An endpoint with a policy of its own has its own key (and does not also cost an account token);
    any other endpoint shares the account's key.
    """
    limits = account_limits(provider, settings)
    if endpoint is not None and endpoint in limits.endpoints:
        return Limit(limiter_key(provider, account, endpoint), limits.endpoints[endpoint])
    if limits.account is None:
        return None
    return Limit(limiter_key(provider, account), limits.account)


def _parse_policy(raw: Mapping[str, Any], path: str, problems: list[str]) -> Policy | None:
    found = len(problems)
    requests = raw.get("requests")
    if "requests" not in raw:
        problems.append(f"{path}.requests: required (how many requests per period)")
    elif (problem := _count_problem(requests)) is not None:
        problems.append(f"{path}.requests: {problem}")
    period_s = None
    if "per" not in raw:
        problems.append(f'{path}.per: required (the period: seconds, or "1s", "15m", "1h", "1d")')
    elif (period_s := _parse_duration(raw["per"])) is None:
        problems.append(
            f'{path}.per: expected seconds or a duration like "1s", "15m", "1h", "1d", got {raw["per"]!r}'
        )
    elif (problem := _period_problem(period_s)) is not None:
        problems.append(f"{path}.per: {problem}")
    burst = raw.get("burst", 1)
    if (problem := _count_problem(burst)) is not None:
        problems.append(f"{path}.burst: {problem}")
    if len(problems) > found:
        return None
    assert isinstance(requests, int) and isinstance(burst, int) and period_s is not None
    return Policy(requests, period_s, burst)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def _parse_duration(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match[1]) * _UNITS[match[2]]
    return None


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86_400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# --- what a 429 says ---------------------------------------------------------------------------------

_RESET_HEADERS = ("x-ratelimit-reset", "x-rate-limit-reset")  # GitHub, X and others
_OPENAI_RESET = "x-ratelimit-reset-requests"  # OpenAI: a duration such as "1s", "6m0s", "20ms"
_GO_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$"
)


def blocked_until(
    headers: Mapping[str, str], now: float, *, max_block_s: float = MAX_BLOCK_S
) -> float | None:
    """Until when a 429's headers say to stop calling (epoch seconds), or None when they say nothing.

    Read in this order, the first one that parses wins:
    1. `Retry-After`: delta-seconds (decimals accepted) or an HTTP-date (RFC 9110 §10.2.3);
    2. `x-ratelimit-reset` / `x-rate-limit-reset`: a number; at or above 1,000,000,000 it is a Unix time
       in seconds (GitHub, X), below that seconds from now;
    3. `x-ratelimit-reset-requests` (OpenAI): a duration such as "1s", "6m0s", "1h2m3.5s", "20ms".
    The result is never before `now` (a reset in the past means "go now") and at most `max_block_s`
    after it. Header names are matched case-insensitively.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    when = retry_after_at(lowered.get("retry-after"), now)
    for name in _RESET_HEADERS:
        if when is None:
            when = _reset(lowered.get(name), now)
    if when is None:
        seconds = _go_duration(lowered.get(_OPENAI_RESET))
        when = None if seconds is None else now + seconds
    if when is None:
        return None
    return min(max(when, now), now + max_block_s)


_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


def _number(value: str) -> float | None:
    """A non-negative decimal number written plainly (no sign, exponent, inf or nan), else None."""
    return float(value) if _NUMBER.match(value) else None


def retry_after_at(value: str | None, now: float) -> float | None:
    """A `Retry-After` value (delta-seconds, decimals accepted, or an HTTP-date) as epoch seconds."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    seconds = _number(value)
    if seconds is not None:
        return now + seconds
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if date.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is read as UTC
        date = date.replace(tzinfo=UTC)
    return date.timestamp()


def _reset(value: str | None, now: float) -> float | None:
    number = _number(value.strip()) if value else None
    if number is None:
        return None
    return number if number >= EPOCH_THRESHOLD else now + number


def _go_duration(value: str | None) -> float | None:
    if not value:
        return None
    match = _GO_DURATION.match(value.strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds, millis = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


# --- what an accepted answer says about the room left --------------------------------------------------

# (limit, remaining) header pairs, most specific first: OpenAI's per-request ones, Anthropic's, X's own
# spelling, the common x-ratelimit-*, and the IETF draft's RateLimit-*.
_QUOTA_HEADERS = (
    ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"),
    ("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining"),
    ("x-rate-limit-limit", "x-rate-limit-remaining"),
    ("x-ratelimit-limit", "x-ratelimit-remaining"),
    ("ratelimit-limit", "ratelimit-remaining"),
)


def headroom(headers: Mapping[str, str]) -> dict[str, int] | None:
    """The provider's own count of requests left (`remaining`, with `limit` when it says), from the first
    header pair it sent whose remaining count is a whole number; None when it says nothing usable."""
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    for limit_name, remaining_name in _QUOTA_HEADERS:
        remaining = lowered.get(remaining_name, "")
        if remaining.isascii() and remaining.isdigit() and len(remaining) <= 12:
            found = {"remaining": int(remaining)}
            limit = lowered.get(limit_name, "")
            if limit.isascii() and limit.isdigit() and len(limit) <= 12:
                found["limit"] = int(limit)
            return found
    return None
