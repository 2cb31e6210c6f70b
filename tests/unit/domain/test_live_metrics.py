"""domain/live_metrics.py: the dashboard's definitions (seed-spec §5) on hand-made snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cosmogen.domain.live_metrics import CurrentRun, LiveSnapshot, live_metrics

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _run(cursor: int, events: int, total: int = 10, status: str = "running") -> CurrentRun:
    return CurrentRun("r1", status, NOW - timedelta(seconds=30), None, cursor, total, events)


def test_progress_counts_events_or_the_checkpoint_whichever_is_further() -> None:
    base = LiveSnapshot("u1", "live")
    assert live_metrics(base, NOW, 300)["progress"] is None
    shown = live_metrics(LiveSnapshot("u1", "live", current=_run(0, 3)), NOW, 300)["progress"]
    assert shown == {"run_id": "r1", "completed": 3, "total": 10, "ratio": 0.3}

    # Telemetry `minimal`: no node events, the checkpoint cursor still moves.
    def progress(run: CurrentRun) -> dict[str, object]:
        return dict(live_metrics(LiveSnapshot("u1", "live", current=run), NOW, 300)["progress"])

    assert progress(_run(8, 0))["completed"] == 8
    assert progress(_run(10, 12))["ratio"] == 1.0
    assert progress(_run(0, 0, total=0))["ratio"] == 1.0


def test_velocity_error_rate_and_uptime() -> None:
    snapshot = LiveSnapshot(
        "u1",
        "live",
        launch_id="l1",
        launch_status="live",
        launched_at=NOW - timedelta(minutes=90),
        runs_by_status={"succeeded": 4, "failed": 1},
        nodes_in_window=30,
        calls_in_window={"succeeded": 7, "failed": 2, "ambiguous": 1, "marked_done": 5, "intent": 3},
    )
    shown = live_metrics(snapshot, NOW, 600)
    assert shown["velocity"] == {"nodes_per_min": 3.0, "calls_per_min": 1.0}
    assert shown["calls"] == {"total": 10, "failed": 3} and shown["error_rate"] == 0.3
    assert shown["uptime_s"] == 5400.0 and shown["runs"]["total"] == 5
    quiet = LiveSnapshot("u1", "draft", launch_id="l1", launch_status="draft", launched_at=NOW)
    assert live_metrics(quiet, NOW, 60)["uptime_s"] is None
    assert live_metrics(quiet, NOW, 60)["error_rate"] is None  # no call, no rate (not 0)
    with pytest.raises(ValueError, match=r"window_s must be within 10\.\.86400"):
        live_metrics(quiet, NOW, 5)
