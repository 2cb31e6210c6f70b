"""The `commit` benchmark runs end to end on both dialects (tiny sizes: this checks it works, not speed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cosmogen.bench import commit
from tests.conftest import ADMIN_URL


def test_commit_bench_measures_both_dialects_and_cleans_up(tmp_path: Path) -> None:
    figures = commit.run(
        repeat=2, postgres_url=ADMIN_URL, data_dir=tmp_path, singles=20, producers=4, writes_per_producer=10
    )
    for dialect in ("sqlite", "postgresql"):
        d = figures[dialect]
        assert d["singles_commits_per_s"]["min"] > 0
        assert d["group_rows_per_s"]["min"] <= d["group_rows_per_s"]["median"] <= d["group_rows_per_s"]["max"]
        # 40 rows per round; every commit carries at least one of them.
        assert 1 <= d["group_commits_per_round"]["median"] <= 40
        # Each producer has at most one write in flight, so no batch can exceed the producer count.
        assert 1 <= d["group_mean_batch"]["min"] <= d["group_mean_batch"]["max"] <= 4
    assert "synchronous=FULL" in figures["sqlite"]["setting"]
    text_out = commit.describe(figures)
    assert "sqlite" in text_out and "postgresql" in text_out and "commits/s" in text_out
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


def test_commit_bench_says_when_postgresql_was_not_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(commit.POSTGRES_URL_ENV, raising=False)
    figures = commit.run(repeat=1, data_dir=tmp_path, singles=5, producers=2, writes_per_producer=5)
    assert "skipped" in figures["postgresql"]
    assert "postgresql: not measured" in commit.describe(figures)
