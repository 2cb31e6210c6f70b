"""Status-aware retry decisions. Pure: the caller supplies the outcome, the attempt number and randomness.

Rules (ARCHITECTURE.md): retry network errors, timeouts, 408, 425, 429 and 5xx; never 400/401/403/404/422
or any other 4xx; 3 retries at 1 s, 2 s, 4 s with jitter; honour `Retry-After`. A request that is not
safe to repeat (POST/PATCH without an idempotency key) is retried only when the server cannot have
acted on it: the connection failed before sending, or the answer was 408, 425, 429 or 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cosmogen.domain.ratelimit import retry_after_at

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
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
    max_retries: int = 3
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.2  # +-20 % so that many runs do not retry in lockstep

    def backoff(self, retry_number: int, random_unit: float, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1-based). `random_unit` is in [0, 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        base = min(self.base_delay * self.factor ** (retry_number - 1), self.max_delay)
        return base * (1 - self.jitter + 2 * self.jitter * random_unit)


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
