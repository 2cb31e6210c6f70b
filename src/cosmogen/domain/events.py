"""The live event stream's vocabulary: a typed, versioned envelope around a stored run event, what a
client subscribed to, and the resume cursor.

The cursor is the event's global id (`run_events.id`): one number covers a workspace-wide stream (a
per-run `seq` would need one number per run). Ids are handed out in insert order; the feed delivers them
in id order and waits for a hole below a newer id to fill (another process's transaction still
committing) before passing it, so a client resuming `after=<last id it saw>` misses nothing and gets
nothing twice. Payloads are sent as stored: they are scrubbed before they are stored (runtime/executor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

VERSION = 1
MAX_ID_LENGTH = 200  # longer universe/run ids are not ours: refuse before any lookup

# Every event has a level, so a log view (or an alert) can ask for "warnings and worse". The level is a
# function of the type alone, so a subscription's level filter is a `type IN (...)` in the store.
LEVELS = ("info", "warning", "error")
_ERRORS = frozenset({"run.failed", "effect.failed", "account.error"})
_WARNINGS = frozenset({"run.needs_attention", "effect.ambiguous", "effect.waiting", "run.parked"})


def level_of(event_type: str) -> str:
    """`error`, `warning` or `info` (every other type, including ones added later)."""
    return "error" if event_type in _ERRORS else "warning" if event_type in _WARNINGS else "info"


def types_at_or_above(level: str) -> frozenset[str] | None:
    """The event types at `level` or worse; None for `info` (every type)."""
    if level == "error":
        return _ERRORS
    if level == "warning":
        return _ERRORS | _WARNINGS
    return None


class BadSubscription(ValueError):
    """The query string does not describe a subscription; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Envelope:
    id: int  # the resume cursor
    type: str  # as journalled: run.started, node.succeeded, effect.waiting, account.status, ...
    workspace: str
    universe: str | None  # None (and run, seq None): the workspace's own event (account.status, ...)
    run: str | None
    seq: int | None  # the event's place in its run (gap-free per run)
    at: datetime  # when the journal wrote it
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "id": self.id,
            "type": self.type,
            "workspace": self.workspace,
            "universe": self.universe,
            "run": self.run,
            "seq": self.seq,
            "at": self.at.isoformat(),
            "level": level_of(self.type),
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class Subscription:
    """Events of one workspace, optionally narrowed to one universe or one run, and to a least level."""

    workspace: str
    universe: str | None = None
    run: str | None = None
    level: str = "info"

    @property
    def types(self) -> frozenset[str] | None:
        """The only event types wanted (None: all)."""
        return types_at_or_above(self.level)

    def matches(self, event: Envelope) -> bool:
        types = self.types
        return (
            event.workspace == self.workspace
            and (self.universe is None or event.universe == self.universe)
            and (self.run is None or event.run == self.run)
            and (types is None or event.type in types)
        )


def parse_cursor(raw: str | None) -> int | None:
    """`after` (or SSE's Last-Event-ID): the id of the last event the client has; None = only new ones."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise BadSubscription(
            "`after` must be the `id` of the last event you received (a whole number >= 0); "
            "send 0 for everything kept, or leave it out for new events only"
        )
    return int(raw)


def parse_subscription(workspace: str, params: Mapping[str, str]) -> tuple[Subscription, int | None]:
    """The subscription and cursor a query string asks for (`universe=`, `run=`, `level=`, `after=`)."""
    unknown = sorted(set(params) - {"universe", "run", "level", "after", "ticket"})
    if unknown:
        raise BadSubscription(
            f"unknown query parameter(s) {', '.join(unknown)[:100]}; "
            "use universe, run, level, after or ticket"
        )
    level = params.get("level") or "info"
    if level not in LEVELS:
        raise BadSubscription(
            f"`level` must be one of {', '.join(LEVELS)} (the least level wanted), not {level[:20]!r}"
        )
    universe = params.get("universe") or None
    run = params.get("run") or None
    if universe is not None and run is not None:
        raise BadSubscription("subscribe to a universe or to a run, not both")
    for name, value in (("universe", universe), ("run", run)):
        if value is not None and (len(value) > MAX_ID_LENGTH or not value.isprintable()):
            raise BadSubscription(f"`{name}` is not an id of ours; copy it from the API or the CLI")
    return Subscription(workspace, universe, run, level), parse_cursor(params.get("after"))
