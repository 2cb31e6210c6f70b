"""Scripted faults: what a route answers instead of its normal reply, for the next N matching requests.

A fault is a value (`Fault`); scheduling it on a target (route, group or `*`) for some number of requests
gives a `ScriptedFault`. The first scheduled fault that matches a request and still has uses left applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

from cosmogen.testing.simulator.targets import ANY, matches

FaultKind = Literal["rate_limit", "status", "delay", "token_expired", "revoked", "invalid_grant", "echo_auth"]
KINDS: tuple[str, ...] = get_args(FaultKind)
MAX_DELAY_S = 600.0  # a delay is a timeout test, not a way to hang a suite forever


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    status: int = 500
    retry_after: float | None = None  # seconds, sent as `Retry-After`
    reset_after: float | None = None  # seconds, sent as an epoch in `x-ratelimit-reset`
    delay_s: float = 0.0
    message: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if not 400 <= self.status <= 599:
            raise ValueError("a fault status is an HTTP error status (400-599)")
        if not 0 <= self.delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be within 0..{MAX_DELAY_S:g}")
        for value in (self.retry_after, self.reset_after):
            if value is not None and value < 0:
                raise ValueError("retry_after and reset_after are non-negative seconds")

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1, *, reset_after: float | None = None) -> Fault:
        """429, in the route's provider shape, with `Retry-After` and/or `x-ratelimit-reset`."""
        return cls("rate_limit", status=429, retry_after=retry_after, reset_after=reset_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls("status", status=status)

    @classmethod
    def timeout(cls, delay_s: float) -> Fault:
        """Answer normally, but only after `delay_s`: longer than the client's timeout, the request is
        still carried out (the ambiguous case a client must not blindly repeat)."""
        return cls("delay", delay_s=delay_s)

    @classmethod
    def token_expired(cls) -> Fault:
        """What the provider says about an expired access token (401, or Slack's 200 `token_expired`)."""
        return cls("token_expired", status=401)

    @classmethod
    def revoked(cls) -> Fault:
        """A revoked grant: provider routes refuse the token, the token endpoint answers `invalid_grant`."""
        return cls("revoked", status=401)

    @classmethod
    def invalid_grant(cls, description: str = "The refresh token is invalid or expired") -> Fault:
        return cls("invalid_grant", status=400, message=description)

    @classmethod
    def echo_auth(cls) -> Fault:
        """A 401 whose body repeats the request's credentials: what a leak test must never store."""
        return cls("echo_auth", status=401)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        allowed = {"kind", "status", "retry_after", "reset_after", "delay_s", "message"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
        defaults: dict[str, Any] = {
            "rate_limit": {"status": 429},
            "token_expired": {"status": 401},
            "revoked": {"status": 401},
            "echo_auth": {"status": 401},
            "invalid_grant": {"status": 400},
        }.get(str(kind), {})
        fields = {**defaults, **{k: v for k, v in data.items() if k != "kind"}}
        try:
            return cls(
                cast(FaultKind, kind),
                status=int(fields.get("status", 500)),
                retry_after=_float_or_none(fields.get("retry_after")),
                reset_after=_float_or_none(fields.get("reset_after")),
                delay_s=float(fields.get("delay_s", 0.0)),
                message=None if fields.get("message") is None else str(fields["message"]),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad fault: {exc}") from None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass
class ScriptedFault:
    id: int
    fault: Fault
    target: str
    times: int | None  # None: every matching request until cleared
    after: int  # matching requests let through untouched before the first use
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "times": self.times,
            "after": self.after,
            "seen": self.seen,
            "fired": self.fired,
            **self.fault.to_json(),
        }


class FaultScript:
    def __init__(self) -> None:
        self._items: list[ScriptedFault] = []
        self._next_id = 1

    def add(self, fault: Fault, target: str = ANY, *, times: int | None = 1, after: int = 0) -> ScriptedFault:
        if times is not None and times < 1:
            raise ValueError("times is at least 1 (or None for until cleared)")
        if after < 0:
            raise ValueError("after is not negative")
        item = ScriptedFault(self._next_id, fault, target, times, after)
        self._next_id += 1
        self._items.append(item)
        return item

    def take(self, route: str, group: str) -> Fault | None:
        """The fault for this request, using it up; None when the request is to be answered normally."""
        for item in self._items:
            if item.exhausted or not matches(item.target, route, group):
                continue
            item.seen += 1
            if item.seen <= item.after:
                continue
            item.fired += 1
            return item.fault
        return None

    @property
    def items(self) -> list[ScriptedFault]:
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()
