"""The request log: what each request looked like as sent (secrets included: they are the test's own fake
data) and what the simulator answered, with the helpers benchmarks and tests assert on."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cosmogen.testing.simulator.targets import ANY, matches


@dataclass
class LoggedRequest:
    seq: int
    time: float  # the simulator's clock at arrival (monotonic unless a clock was given)
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    route: str
    group: str
    credential: str | None  # the API key, access token or OAuth client id presented, as sent
    status: int | None = None  # filled in when the answer is sent
    # ok | error (a provider-level refusal) | unauthorized | rate_limited (the bucket) | fault (scripted)
    # | replayed (idempotency) | conflict (same key in flight) | pending (not answered yet)
    outcome: str = "pending"
    fault: str | None = None  # the kind of the scripted fault applied, if any
    within_policy: bool | None = None  # None when no rate-limit policy covers the route

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def max_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most timestamps in any half-open window [t, t + window). A perfect bucket of rate r and
    burst b allows b + r*window - 1 of them (19 for 10/s burst 10 over 1 s)."""
    if window <= 0:
        raise ValueError("window must be positive")
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class RequestLog:
    def __init__(self) -> None:
        self.entries: list[LoggedRequest] = []

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, entry: LoggedRequest) -> None:
        self.entries.append(entry)

    def select(self, target: str = ANY, *, credential: str | None = None) -> list[LoggedRequest]:
        return [
            e
            for e in self.entries
            if matches(target, e.route, e.group) and (credential is None or e.credential == credential)
        ]

    def count_status(self, status: int, target: str = ANY) -> int:
        return sum(1 for e in self.select(target) if e.status == status)

    def count_429(self, target: str = ANY) -> int:
        return self.count_status(429, target)

    def max_in_window(self, target: str = ANY, window: float = 1.0) -> int:
        """Most requests that arrived in any `window` seconds (all of them, answered 429 or not)."""
        return max_in_window((e.time for e in self.select(target)), window)

    def span(self, target: str = ANY) -> float:
        """Seconds from the first arrival to the last (0 with fewer than two requests)."""
        times = [e.time for e in self.select(target)]
        return max(times) - min(times) if len(times) > 1 else 0.0

    def clear(self) -> None:
        self.entries.clear()
