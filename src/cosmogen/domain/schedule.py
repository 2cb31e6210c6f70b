"""Trigger specs and the scheduling decisions made on them. Pure: no clock reads, `now` is always passed in.

A launch has triggers of four kinds: `manual` (a person starts a run), `interval` (every N seconds),
`cron` (a five-field cron expression in a timezone) and `webhook` (an inbound HTTP request). Interval and
cron triggers are *scheduled*: each has ticks, and two policies decide what happens to them.

Catch-up (what to do with ticks the scheduler was late for, e.g. because it was down):
- `all`: fire every tick that is at most `catchup_window_s` old; older ones are missed.
- `one`: fire only the newest tick inside the window; the others are missed.
- `skip`: fire a tick only if it is on time (at most ON_TIME_GRACE_S late); everything else is missed.

Overlap (what to do with a tick while runs of the same trigger are still in flight):
- `skip` (the default): do not start it.
- `queue`: keep one tick waiting and start it when the trigger has no run in flight; further ones are skipped.
- `allow`: start it anyway.

DUR-09: `*/5 * * * *` with a 15-minute window, the scheduler down from just after 00:00 until 01:00:30:
`all` fires 00:50, 00:55 and 01:00 and misses the 9 ticks 00:05..00:45; `one` fires 01:00 alone; `skip`
fires nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

# A tick this late still counts as on time: the scheduler polls about once a second, and a slow database
# commit must not turn every tick into a late one. Also the smallest catch-up window (as in Temporal).
ON_TIME_GRACE_S = 10
DEFAULT_CATCHUP_WINDOW_S = 15 * 60
MAX_CATCHUP_WINDOW_S = 7 * 24 * 3600
MAX_INTERVAL_S = 366 * 24 * 3600
# After a very long outage we list this many missed ticks and jump ahead to the catch-up window, so a
# year-old `* * * * *` schedule does not enumerate half a million ticks on the event loop.
MISSED_LIST_LIMIT = 1000

CRON_EXAMPLE = "'*/5 * * * *' (every five minutes) or '0 9 * * 1-5' (09:00 on weekdays)"


class TriggerKind(StrEnum):
    MANUAL = "manual"
    INTERVAL = "interval"
    CRON = "cron"
    WEBHOOK = "webhook"


class Catchup(StrEnum):
    SKIP = "skip"
    ONE = "one"
    ALL = "all"


class Overlap(StrEnum):
    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"


class OverlapDecision(StrEnum):
    START = "start"
    SKIP = "skip"
    DEFER = "defer"


class TriggerSpecError(ValueError):
    """A trigger spec we cannot use; `problems` lists each one with how to fix it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid trigger: " + "; ".join(problems))


# --- specs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManualSpec:
    kind: ClassVar[TriggerKind] = TriggerKind.MANUAL

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value}


IDEMPOTENCY_KEY_POLICIES = ("optional", "required")


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    # signed: deliveries must carry an HMAC signature (docs/launches.md); secure by default, `false` only
    # for senders that cannot sign. idempotency_key: "required" refuses deliveries without the header.
    signed: bool = True
    idempotency_key: str = "optional"
    kind: ClassVar[TriggerKind] = TriggerKind.WEBHOOK

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.signed, bool):
            problems.append(f"'signed' must be true or false, not {self.signed!r}")
        if self.idempotency_key not in IDEMPOTENCY_KEY_POLICIES:
            problems.append(
                f"'idempotency_key' must be 'optional' or 'required', not {self.idempotency_key!r}"
            )
        if problems:
            raise TriggerSpecError(problems)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "signed": self.signed, "idempotency_key": self.idempotency_key}


@dataclass(frozen=True, slots=True)
class IntervalSpec:
    every_s: int
    catchup: Catchup = Catchup.ALL
    catchup_window_s: int = DEFAULT_CATCHUP_WINDOW_S
    overlap: Overlap = Overlap.SKIP
    kind: ClassVar[TriggerKind] = TriggerKind.INTERVAL

    def __post_init__(self) -> None:
        problems = _interval_problems(self.every_s) + _policy_problems(
            self.catchup, self.catchup_window_s, self.overlap
        )
        if problems:
            raise TriggerSpecError(problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "every_s": self.every_s,
            "catchup": self.catchup.value,
            "catchup_window_s": self.catchup_window_s,
            "overlap": self.overlap.value,
        }


@dataclass(frozen=True, slots=True)
class CronSpec:
    expr: str
    timezone: str = "UTC"
    catchup: Catchup = Catchup.ALL
    catchup_window_s: int = DEFAULT_CATCHUP_WINDOW_S
    overlap: Overlap = Overlap.SKIP
    kind: ClassVar[TriggerKind] = TriggerKind.CRON
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = _cron_problems(self.expr) + _timezone_problems(self.timezone)
        problems += _policy_problems(self.catchup, self.catchup_window_s, self.overlap)
        if problems:
            raise TriggerSpecError(problems)
        object.__setattr__(self, "_zone", ZoneInfo(self.timezone))

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "expr": self.expr,
            "timezone": self.timezone,
            "catchup": self.catchup.value,
            "catchup_window_s": self.catchup_window_s,
            "overlap": self.overlap.value,
        }


TriggerSpec = ManualSpec | IntervalSpec | CronSpec | WebhookSpec
ScheduledSpec = IntervalSpec | CronSpec

_FIELDS: Mapping[TriggerKind, tuple[frozenset[str], frozenset[str]]] = MappingProxyType(
    {
        # kind: (required keys, optional keys), "kind" itself aside
        TriggerKind.MANUAL: (frozenset(), frozenset()),
        TriggerKind.WEBHOOK: (frozenset(), frozenset({"signed", "idempotency_key"})),
        TriggerKind.INTERVAL: (frozenset({"every_s"}), frozenset({"catchup", "catchup_window_s", "overlap"})),
        TriggerKind.CRON: (
            frozenset({"expr"}),
            frozenset({"timezone", "catchup", "catchup_window_s", "overlap"}),
        ),
    }
)


def parse_trigger_spec(raw: object) -> TriggerSpec:
    """Build a spec from its JSON form, e.g. `{"kind": "cron", "expr": "*/5 * * * *"}`.

    Raises TriggerSpecError listing every problem (unknown or missing keys, bad values) with its fix.
    """
    if not isinstance(raw, Mapping):
        raise TriggerSpecError([f"a trigger must be a JSON object such as {{'kind': 'manual'}}, not {raw!r}"])
    kinds = ", ".join(k.value for k in TriggerKind)
    kind_text = raw.get("kind")
    if kind_text not in {k.value for k in TriggerKind}:
        raise TriggerSpecError([f"'kind' must be one of {kinds}, not {kind_text!r}"])
    kind = TriggerKind(kind_text)
    required, optional = _FIELDS[kind]
    problems: list[str] = []
    unknown = sorted(set(raw) - required - optional - {"kind"})
    if unknown:
        allowed = ", ".join(sorted(required | optional)) or "none besides 'kind'"
        problems.append(f"unknown keys {unknown} for a trigger of kind {kind.value!r}; allowed: {allowed}")
    missing = sorted(required - set(raw))
    if missing:
        problems.append(f"a trigger of kind {kind.value!r} needs {missing}, e.g. {_EXAMPLES[kind]}")
        raise TriggerSpecError(problems)
    try:
        spec = _build(kind, raw)
    except TriggerSpecError as exc:
        problems += exc.problems
    if problems:
        raise TriggerSpecError(problems)
    return spec


def _build(kind: TriggerKind, raw: Mapping[str, Any]) -> TriggerSpec:
    if kind is TriggerKind.MANUAL:
        return ManualSpec()
    if kind is TriggerKind.WEBHOOK:
        return WebhookSpec(**{k: raw[k] for k in ("signed", "idempotency_key") if k in raw})
    # Known enum values become enums; anything else is passed through for __post_init__ to report.
    policy: dict[str, Any] = {k: raw[k] for k in ("catchup_window_s",) if k in raw}
    for key, enum in (("catchup", Catchup), ("overlap", Overlap)):
        if key in raw:
            value = raw[key]
            policy[key] = enum(value) if value in {m.value for m in enum} else value
    if kind is TriggerKind.INTERVAL:
        return IntervalSpec(every_s=raw["every_s"], **policy)
    return CronSpec(expr=raw["expr"], timezone=raw.get("timezone", "UTC"), **policy)


_EXAMPLES: Mapping[TriggerKind, str] = MappingProxyType(
    {
        TriggerKind.MANUAL: "{'kind': 'manual'}",
        TriggerKind.WEBHOOK: "{'kind': 'webhook'}",
        TriggerKind.INTERVAL: "{'kind': 'interval', 'every_s': 300}",
        TriggerKind.CRON: "{'kind': 'cron', 'expr': '*/5 * * * *', 'timezone': 'Europe/Berlin'}",
    }
)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _interval_problems(every_s: object) -> list[str]:
    if not _is_int(every_s) or not 1 <= every_s <= MAX_INTERVAL_S:
        return [f"'every_s' must be a whole number of seconds from 1 to {MAX_INTERVAL_S}, not {every_s!r}"]
    return []


def _policy_problems(catchup: object, window_s: object, overlap: object) -> list[str]:
    problems = []
    if not isinstance(catchup, Catchup):
        problems.append(f"'catchup' must be one of {', '.join(c.value for c in Catchup)}, not {catchup!r}")
    if not isinstance(overlap, Overlap):
        problems.append(f"'overlap' must be one of {', '.join(o.value for o in Overlap)}, not {overlap!r}")
    if not _is_int(window_s) or not ON_TIME_GRACE_S <= window_s <= MAX_CATCHUP_WINDOW_S:
        problems.append(
            f"'catchup_window_s' must be a whole number of seconds from {ON_TIME_GRACE_S} to "
            f"{MAX_CATCHUP_WINDOW_S} (7 days), not {window_s!r}; the default is {DEFAULT_CATCHUP_WINDOW_S}"
        )
    return problems


def _cron_problems(expr: object) -> list[str]:
    if not isinstance(expr, str) or not expr.strip():
        return [f"'expr' must be a cron expression such as {CRON_EXAMPLE}, not {expr!r}"]
    fields = expr.split()
    plural = "" if len(fields) == 1 else "s"
    if not expr.startswith("@") and len(fields) != 5:
        return [
            f"cron expression {expr!r} has {len(fields)} field{plural}; use five, "
            f"'minute hour day-of-month month day-of-week' (no seconds or years), e.g. {CRON_EXAMPLE}"
        ]
    try:
        # One tick from a fixed date proves the expression parses and can ever fire ('0 0 31 2 *' cannot).
        croniter(expr, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception as exc:  # croniter raises several types for bad input; all mean "not valid"
        return [f"cron expression {expr!r} is not valid ({exc}); use e.g. {CRON_EXAMPLE}"]
    return []


def _timezone_problems(name: object) -> list[str]:
    if isinstance(name, str) and name:
        try:
            ZoneInfo(name)
            return []
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return [
        f"unknown timezone {name!r}; use an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'"
    ]


# --- ticks ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What to do with the ticks from `planned` up to `now`: fire some, miss the rest, plan the next."""

    fire: list[datetime]
    missed: list[datetime]
    next_at: datetime
    # More ticks were missed than `missed` lists (an outage longer than MISSED_LIST_LIMIT ticks).
    missed_truncated: bool = False


def next_fire(spec: ScheduledSpec, after: datetime) -> datetime:
    """The first tick strictly after `after`, as an aware UTC datetime.

    An interval's ticks are `after + every_s`: the grid is anchored where the launch went live.
    """
    return next(_ticks_after(spec, _aware(after, "after")))


def plan_ticks(spec: ScheduledSpec, planned: datetime, now: datetime) -> TickPlan:
    """Decide the ticks `planned`, the ones after it, ... up to `now` (inclusive), by the catch-up policy.

    `planned` is the tick the trigger was waiting for (its stored next_fire_at). Every tick in
    [planned, now] is either fired or missed, and `next_at` is the first tick after `now`, so calling
    this again with `planned=next_at` never sees a tick twice.
    """
    planned, now = _aware(planned, "planned"), _aware(now, "now")
    if planned > now:
        return TickPlan([], [], planned)
    window_s = ON_TIME_GRACE_S if spec.catchup is Catchup.SKIP else spec.catchup_window_s
    window_start = now - timedelta(seconds=window_s)
    missed: list[datetime] = []
    truncated = False
    ticks = _ticks_from(spec, planned)
    tick = next(ticks)
    while tick < window_start:
        if len(missed) == MISSED_LIST_LIMIT:
            truncated = True
            ticks = _ticks_from(spec, _first_tick_at_or_after(spec, planned, window_start))
            tick = next(ticks)
            break
        missed.append(tick)
        tick = next(ticks)
    inside: list[datetime] = []
    while tick <= now:
        inside.append(tick)
        tick = next(ticks)
    if spec.catchup is Catchup.ALL:
        fire = inside
    else:
        fire, missed = inside[-1:], missed + inside[:-1]
    return TickPlan(fire, missed, tick, truncated)


def overlap_decision(policy: Overlap, in_flight: int, pending: bool) -> OverlapDecision:
    """May a tick start now, with `in_flight` runs of its trigger still going and (`pending`) a tick
    already waiting? `defer` means: keep this tick and start it once nothing is in flight."""
    if in_flight < 0:
        raise ValueError(f"in_flight counts runs and cannot be negative, got {in_flight}")
    if policy is Overlap.ALLOW or in_flight == 0:
        return OverlapDecision.START
    if policy is Overlap.QUEUE and not pending:
        return OverlapDecision.DEFER
    return OverlapDecision.SKIP


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}={value!r} is naive; pass a timezone-aware datetime (UTC)")
    return value.astimezone(UTC)


def _ticks_from(spec: ScheduledSpec, first: datetime) -> Iterator[datetime]:
    """`first` (taken to be a tick), then every later tick."""
    yield first
    yield from _ticks_after(spec, first)


def _ticks_after(spec: ScheduledSpec, after: datetime) -> Iterator[datetime]:
    """Every tick strictly after `after`, strictly increasing, in UTC."""
    if isinstance(spec, IntervalSpec):
        step = timedelta(seconds=spec.every_s)
        tick = after
        while True:
            tick += step
            yield tick
    else:
        local = croniter(spec.expr, after.astimezone(spec.zone))
        last = after
        while True:
            tick = local.get_next(datetime).astimezone(UTC)
            # Guard against a timezone transition handing back a time we already passed.
            if tick > last:
                last = tick
                yield tick


def _first_tick_at_or_after(spec: ScheduledSpec, anchor: datetime, when: datetime) -> datetime:
    if isinstance(spec, IntervalSpec):
        # Stay on the anchor's grid: the interval's ticks are anchor + k * every_s.
        steps = math.ceil((when - anchor).total_seconds() / spec.every_s)
        return anchor + timedelta(seconds=max(steps, 0) * spec.every_s)
    # Cron ticks fall on whole minutes, so "strictly after a moment earlier" is "at or after".
    return next(_ticks_after(spec, when - timedelta(microseconds=1)))
