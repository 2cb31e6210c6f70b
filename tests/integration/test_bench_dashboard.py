"""`cosmogen bench dashboard` (W4) runs end to end with tiny sizes and reports what it says: every event
of the round reached the WebSocket client in its own process, in order, none missing, with latencies
from both the stream and the commit-hook baseline. How fast is the benchmark's business, not this test's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cosmogen.bench import dashboard

ROOT = Path(__file__).resolve().parents[2]


def test_w4_streams_every_event_of_w2_and_times_both_paths() -> None:
    figures = dashboard.run(runs=12, concurrency=3, rounds=1)
    [only] = figures["rounds_detail"]
    assert only["failed_runs"] == 0 and only["runs"] == 12
    # 13 runs (one warm-up) of W2's document, each logging several events: all received, once, in order.
    assert only["events"] >= 13 * 3 and only["received"] == only["events"]
    assert only["missing"] == 0 and only["out_of_order"] == 0
    assert 0 < only["api_p50_ms"] <= only["api_p99_ms"] <= only["api_max_ms"]
    # Receipt comes after the commit, which comes after the write: each part is positive and smaller.
    assert 0 < only["stream_p50_ms"] <= only["stream_p99_ms"] <= only["api_max_ms"]
    assert 0 < only["hook_p50_ms"] <= only["hook_p99_ms"]
    assert figures["stream_p99_ms"]["median"] == only["stream_p99_ms"] and figures["p99_ratio_to_hook"] > 0
    text = dashboard.describe(figures)
    assert "commit -> WebSocket client p99" in text and "in-process hook" in text


def test_the_cli_offers_it() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "cosmogen", "bench", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert shown.returncode == 0 and "dashboard" in shown.stdout
