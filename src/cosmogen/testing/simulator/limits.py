"""Rate-limit enforcement as a provider does it: a token bucket per (target, credential).

A request takes a token if one is there; otherwise it is answered 429 at once and takes nothing. The
bucket refills continuously at `rate` per second up to `burst`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cosmogen.testing.simulator.targets import ANY

EPSILON = 1e-9  # refills of 0.1 s at 10/s must count as a whole token despite float rounding


@dataclass(frozen=True, slots=True)
class Policy:
    rate: float  # tokens per second
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a policy needs rate > 0 and burst >= 1")


@dataclass
class TokenBucket:
    policy: Policy
    tokens: float
    updated: float

    def take(self, now: float) -> float | None:
        """None when a token was taken; otherwise the seconds until one will be there."""
        if now > self.updated:
            self.tokens = min(float(self.policy.burst), self.tokens + (now - self.updated) * self.policy.rate)
            self.updated = now
        if self.tokens >= 1 - EPSILON:
            self.tokens = max(0.0, self.tokens - 1)
            return None
        return (1 - self.tokens) / self.policy.rate


class Limits:
    def __init__(self) -> None:
        self.policies: dict[str, Policy] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def set(self, target: str, rate: float, burst: int) -> Policy:
        policy = Policy(rate, burst)
        self.policies[target] = policy
        self._buckets = {k: v for k, v in self._buckets.items() if k[0] != target}
        return policy

    def remove(self, target: str) -> None:
        self.policies.pop(target, None)
        self._buckets = {k: v for k, v in self._buckets.items() if k[0] != target}

    def clear(self) -> None:
        self.policies.clear()
        self._buckets.clear()

    def refill(self) -> None:
        """Forget the buckets' state (full again), keeping the policies."""
        self._buckets.clear()

    def check(self, route: str, group: str, credential: str | None, now: float) -> float | None:
        """None when no policy covers the route; 0.0 when the request is within policy (it took a
        token); otherwise the seconds until a token would be there. The most specific policy applies:
        route, then group, then `*`; each credential has its own bucket."""
        for target in (route, group, ANY):
            policy = self.policies.get(target)
            if policy is not None:
                break
        else:
            return None
        key = (target, credential or "")
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(policy, float(policy.burst), now)
        wait = bucket.take(now)
        return 0.0 if wait is None else wait

    def left(self, route: str, group: str, credential: str | None) -> tuple[int, int] | None:
        """(whole tokens left, burst) of the bucket `check` used last for this caller, or None: what a
        provider reports in its x-ratelimit-remaining / -limit headers."""
        for target in (route, group, ANY):
            bucket = self._buckets.get((target, credential or ""))
            if bucket is not None:
                return int(bucket.tokens + EPSILON), bucket.policy.burst
            if target in self.policies:
                return None
        return None
