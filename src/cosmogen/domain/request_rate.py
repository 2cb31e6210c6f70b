"""Per-workspace request rate: a token bucket per workspace. Pure (the clock is handed in).

A workspace may make `per_minute` requests a minute on average, in bursts of up to `burst`. Over it, a
request is refused with the seconds until one more is allowed (the server answers 429 + Retry-After).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RatePolicy:
    # Generous by default (a self-hosted server, API tests and benchmarks share a workspace): it stops a
    # runaway script, not normal use. `cosmogen serve --workspace-requests-per-minute` sets it.
    per_minute: int = 12_000
    burst: int = 2_000

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError("a request rate needs at least 1 request a minute and a burst of at least 1")


@dataclass(slots=True)
class Buckets:
    policy: RatePolicy
    _levels: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)

    def take(self, key: str, now: float) -> int:
        """0 if the request may go on (and counts), else the whole seconds to wait."""
        rate = self.policy.per_minute / 60.0
        tokens, at = self._levels.get(key, (float(self.policy.burst), now))
        tokens = min(float(self.policy.burst), tokens + max(0.0, now - at) * rate)
        if tokens >= 1.0:
            self._levels[key] = (tokens - 1.0, now)
            return 0
        self._levels[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / rate))
