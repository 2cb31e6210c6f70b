"""`cosmogen bench ratelimit` (W3) and W2's provider variant run end to end with tiny sizes. This checks
that they work and report what they say, not how fast anything is: timing lives in the benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from cosmogen.bench import ratelimit, throughput
from tests.conftest import ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]


def test_w3_measures_both_configurations_and_cleans_up(tmp_path: Path) -> None:
    figures = ratelimit.run(rounds=1, postgres_url=ADMIN_URL, runs=12, workers=2, data_dir=tmp_path)
    assert figures["runs"] == 12 and figures["ideal_s"] == 0.2  # 10 at once, then 2 at 10/s
    assert figures["limiter_floor_s"] == 0.4  # plus the 200 ms arrival allowance
    for name in ("sqlite", "postgresql"):
        d = figures[name]
        [only] = d["rounds_detail"]
        # Every run made its one call, plus one retry per refusal (whether the simulator's exact bucket
        # refuses one depends on timing: that is the benchmark's figure, not this test's).
        assert only["succeeded"] == 12 and d["failed_runs"] == 0
        assert only["calls"] == 12 + only["status_429"]
        assert only["elapsed_s"] > 0 and 0 < only["first_call_s"] < only["all_done_s"]
        assert only["max_in_1s"] <= only["calls"]
        assert 0 <= only["burst_spread_s"] <= only["elapsed_s"]  # first to 10th call
        assert d["elapsed_s"]["median"] == only["elapsed_s"]
    assert "2 `cosmogen worker` processes" in figures["postgresql"]["setting"]
    text_out = ratelimit.describe(figures)
    assert "sqlite" in text_out and "postgresql" in text_out and "429s from the simulator" in text_out
    assert list(tmp_path.iterdir()) == []  # the SQLite scratch directory is gone
    admin = create_engine(ADMIN_URL)
    try:
        with admin.connect() as conn:
            leftovers = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'cosmogen_bench_%'")
            )
            assert leftovers.scalars().all() == []
    finally:
        admin.dispose()


def test_w3_says_when_postgresql_was_not_measured_through_the_cli(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COSMOGEN_BENCH_POSTGRES_URL"}
    # One round of the real size (100 runs, ~9 s of calls at 10/s) through the command line.
    done = subprocess.run(
        [sys.executable, "-m", "cosmogen", "bench", "ratelimit", "--json", "--repeat", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["ideal_s"] == 9.0 and figures["rounds"] == 1
    assert figures["sqlite"]["rounds_detail"][0]["succeeded"] == 100
    assert figures["sqlite"]["rounds_detail"][0]["calls"] >= 100
    assert "COSMOGEN_BENCH_POSTGRES_URL" in figures["postgresql"]["skipped"]


def test_w2_provider_variant_runs_both_sides_against_one_simulator() -> None:
    variant = throughput._provider_variant(runs=20, concurrency=4, rounds=1)
    for side in ("plain_http_node", "openai_binding"):
        assert variant[side]["errors"] == 0
        assert variant[side]["runs_per_s"]["median"] > 0
    # The ratio is computed from the two medians it reports.
    plain = variant["plain_http_node"]["runs_per_s"]["median"]
    bound = variant["openai_binding"]["runs_per_s"]["median"]
    assert variant["binding_over_plain"] == round(bound / plain, 3)
    lines = throughput._describe_provider(variant)
    assert any("binding / plain" in line for line in lines)
