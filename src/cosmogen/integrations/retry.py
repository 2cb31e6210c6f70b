"""Status-aware retry decisions. Pure: the caller supplies the outcome, the attempt number and randomness.

Rules (ARCHITECTURE.md, DUR-12): retry network errors, timeouts, 408, 425, 429 and 5xx; never
400/401/403/404/422 or any other 4xx. A request that is not safe to repeat (POST/PATCH without an
idempotency key) is retried only when the server cannot have acted on it: the connection failed before
sending, or the answer was 408, 425, 429 or 503.

When: 3 retries (4 attempts; never more than 5). Before retry n the wait is drawn uniformly from
[c_n / 2, c_n] with c_n = min(1 s * 2^(n-1), 60 s), i.e. 0.5-1 s, 1-2 s, 2-4 s ("equal jitter": the
1 s / 2 s / 4 s of the rule are the caps). Not "full jitter" (uniform in [0, c_n]): that may retry an
overloaded server at once and leaves no floor that grows, while half an interval of spread is enough to
keep runs that failed together from coming back in lockstep (calls under a shared rate limit are spaced
by the limiter anyway). A server's `Retry-After` replaces the backoff and is obeyed as given, even above
the 60 s cap: no request goes before it expires; it is only bounded by MAX_RETRY_AFTER_S, the same hour
the rate limiter caps a 429's block at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cosmogen.domain.ratelimit import MAX_BLOCK_S, retry_after_at

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_ATTEMPTS = 5  # [ours] no call is sent more than this many times (first attempt included)
MAX_BACKOFF_S = 60.0  # [ours] the longest wait our own backoff chooses
MAX_RETRY_AFTER_S = MAX_BLOCK_S  # a bogus or hostile Retry-After must not hold a call for days
_NOT_PROCESSED_STATUSES = frozenset({408, 425, 429, 503})


class Failure(StrEnum):
    """What went wrong with one attempt, as the transport saw it."""

    CONNECT = "connect"  # nothing was sent: refused, DNS, TLS handshake
    TIMEOUT = "timeout"  # sent, no complete answer in time: the server may have acted
    DISCONNECT = "disconnect"  # the connection broke after sending


class Verdict(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many retries and how long before each (see the module docstring)."""

    max_retries: int = 3
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = MAX_BACKOFF_S

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.max_retries, int) and 0 <= self.max_retries <= MAX_ATTEMPTS - 1):
            problems.append(
                f"max_retries must be a whole number from 0 to {MAX_ATTEMPTS - 1} "
                f"(at most {MAX_ATTEMPTS} attempts in all), got {self.max_retries!r}"
            )
        if not 0 < self.max_delay <= MAX_BACKOFF_S:
            problems.append(
                f"max_delay must be more than 0 and at most {MAX_BACKOFF_S:g} s, got {self.max_delay!r}"
            )
        if not 0 < self.base_delay <= self.max_delay:
            problems.append(f"base_delay must be more than 0 and at most max_delay, got {self.base_delay!r}")
        if not 1 <= self.factor <= 10:
            problems.append(f"factor must be from 1 to 10, got {self.factor!r}")
        if problems:
            raise ValueError("invalid retry policy: " + "; ".join(problems))

    def cap(self, retry_number: int) -> float:
        """The longest wait before retry `retry_number` (1-based): base * factor^(n-1), at most max_delay."""
        if retry_number < 1:
            raise ValueError(f"retry_number is 1-based, got {retry_number}")
        exponent = min(retry_number - 1, 64)  # past max_delay long before; keeps the power finite
        return min(self.base_delay * self.factor**exponent, self.max_delay)

    def backoff(self, retry_number: int, random_unit: float, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1-based). `random_unit` is in [0, 1).

        The server's `retry_after` (seconds) when given, up to MAX_RETRY_AFTER_S; else uniform in
        [cap / 2, cap] ("equal jitter")."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
        cap = self.cap(retry_number)
        return cap / 2 + cap / 2 * random_unit


def repeatable(method: str, has_idempotency_key: bool) -> bool:
    return has_idempotency_key or method.upper() in IDEMPOTENT_METHODS


def classify(status: int | None, failure: Failure | None, *, repeatable_request: bool) -> Verdict:
    """Decide what one attempt's outcome means. Exactly one of `status` and `failure` is given."""
    if failure is not None:
        if failure is Failure.CONNECT or repeatable_request:
            return Verdict.RETRY
        return Verdict.FAIL
    assert status is not None
    if 200 <= status < 400:
        return Verdict.SUCCESS
    retryable = status in (408, 425, 429) or status >= 500
    if not retryable:
        return Verdict.FAIL
    if repeatable_request or status in _NOT_PROCESSED_STATUSES:
        return Verdict.RETRY
    return Verdict.FAIL


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: either delta-seconds or an HTTP date. None when absent or bad."""
    when = retry_after_at(value, now.timestamp())  # one parser, shared with the rate limiter
    return None if when is None else max(when - now.timestamp(), 0.0)
