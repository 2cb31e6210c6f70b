"""Runtime tests run on both dialects: SQLite in a fresh data directory, PostgreSQL in a scratch database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime.service import RuntimeSettings
from cosmogen.testing.echo import EchoServer, ThreadedEchoServer

LOOPBACK = EgressPolicy.from_strings(networks="127.0.0.1/32")


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeSettings:
    base = RuntimeSettings(egress=LOOPBACK, poll_interval_s=0.05)
    if request.param == "sqlite":
        return replace(base, data_dir=tmp_path / "data")
    return replace(base, database_url=request.getfixturevalue("clean_pg_url"))


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with ThreadedEchoServer() as server:
        yield server
