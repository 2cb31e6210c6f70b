"""A universe's live metrics for the dashboard (seed-spec §5, REBUILD). Pure: computed from a snapshot of
rows the API reads in one go.

- progress = nodes completed / nodes of the current run (the universe's newest run): completed is the
  larger of its checkpoint cursor and its `node.finished` events (a run at telemetry `minimal` records no
  node events, so it moves at checkpoints only);
- velocity = nodes completed, and calls made, per minute over the sliding window (the last `window_s`
  seconds; a universe live for less than the window is still divided by the whole window, like a
  Prometheus rate);
- error rate = calls that failed (or whose outcome is unknown: ambiguous) / calls completed in the window;
  None when no call completed in it;
- uptime = seconds since the universe's current launch (its most active one, live before paused) was
  launched; None without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MIN_WINDOW_S = 10
MAX_WINDOW_S = 86_400
DEFAULT_WINDOW_S = 300
FAILED_CALLS = frozenset({"failed", "ambiguous"})
COMPLETED_CALLS = frozenset({"succeeded"}) | FAILED_CALLS


@dataclass(frozen=True, slots=True)
class CurrentRun:
    id: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    cursor: int
    nodes_total: int
    nodes_finished: int  # its `node.finished` events


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    universe_id: str
    deployment_status: str
    launch_id: str | None = None
    launch_status: str | None = None
    launched_at: datetime | None = None
    runs_by_status: Mapping[str, int] = field(default_factory=dict)
    current: CurrentRun | None = None
    nodes_in_window: int = 0
    calls_in_window: Mapping[str, int] = field(default_factory=dict)  # effect status -> count


def live_metrics(snapshot: LiveSnapshot, now: datetime, window_s: int) -> dict[str, Any]:
    """The dashboard's numbers for one universe at `now`."""
    if not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S:
        raise ValueError(f"window_s must be within {MIN_WINDOW_S}..{MAX_WINDOW_S}, not {window_s}")
    minutes = window_s / 60
    calls = sum(n for status, n in snapshot.calls_in_window.items() if status in COMPLETED_CALLS)
    failed = sum(n for status, n in snapshot.calls_in_window.items() if status in FAILED_CALLS)
    current = snapshot.current
    progress = None
    if current is not None:
        done = min(max(current.cursor, current.nodes_finished), current.nodes_total)
        ratio = done / current.nodes_total if current.nodes_total else 1.0
        progress = {"run_id": current.id, "completed": done, "total": current.nodes_total, "ratio": ratio}
    uptime = None
    if snapshot.launched_at is not None and snapshot.launch_status in ("live", "paused"):
        uptime = max((now - snapshot.launched_at).total_seconds(), 0.0)
    return {
        "universe_id": snapshot.universe_id,
        "deployment_status": snapshot.deployment_status,
        "at": now,
        "window_s": window_s,
        "launch": None
        if snapshot.launch_id is None
        else {
            "id": snapshot.launch_id,
            "status": snapshot.launch_status,
            "launched_at": snapshot.launched_at,
        },
        "uptime_s": uptime,
        "runs": {"total": sum(snapshot.runs_by_status.values()), "by_status": dict(snapshot.runs_by_status)},
        "last_run": None
        if current is None
        else {
            "id": current.id,
            "status": current.status,
            "created_at": current.created_at,
            "finished_at": current.finished_at,
        },
        "progress": progress,
        "velocity": {
            "nodes_per_min": snapshot.nodes_in_window / minutes,
            "calls_per_min": calls / minutes,
        },
        "calls": {"total": calls, "failed": failed},
        "error_rate": failed / calls if calls else None,
    }
