"""How long a failed sign-in makes the next one wait. Pure (the store side is identity/throttle.py).

Per account: the first `free_failures` consecutive failures cost nothing, then each one doubles the wait
from `base` up to `cap` (1 s, 2 s, 4 s ... 15 min). Nothing is ever permanent: a success resets the
count, and a wait always ends. Per client address: more than `ip_max_failures` failures in `ip_window`
close that address until the window ends, whatever account it tries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    free_failures: int = 5
    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(minutes=15)
    ip_max_failures: int = 50
    ip_window: timedelta = timedelta(minutes=15)

    def account_wait(self, failures: int) -> timedelta:
        """The wait after `failures` consecutive failures of one account."""
        over = failures - self.free_failures
        if over <= 0:
            return timedelta(0)
        # 2**over grows without bound; the cap keeps the wait finite (no permanent lockout).
        grown: timedelta = self.base * (2 ** min(over - 1, 30))
        return min(grown, self.cap)


@dataclass(frozen=True, slots=True)
class Counter:
    failures: int
    window_start: datetime
    locked_until: datetime | None


def after_account_failure(policy: ThrottlePolicy, before: Counter | None, now: datetime) -> Counter:
    failures = (before.failures if before else 0) + 1
    wait = policy.account_wait(failures)
    return Counter(failures, before.window_start if before else now, now + wait if wait else None)


def after_ip_failure(policy: ThrottlePolicy, before: Counter | None, now: datetime) -> Counter:
    if before is None or now - before.window_start >= policy.ip_window:
        before = Counter(0, now, None)
    failures = before.failures + 1
    closed = before.window_start + policy.ip_window if failures >= policy.ip_max_failures else None
    return Counter(failures, before.window_start, closed)


def wait_left(counters: list[Counter], now: datetime) -> timedelta:
    """How long the caller must still wait (zero: it may try now)."""
    ends = [c.locked_until for c in counters if c.locked_until is not None and c.locked_until > now]
    return max(ends) - now if ends else timedelta(0)
