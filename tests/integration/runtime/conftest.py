"""Runtime tests run on both dialects: SQLite in a fresh data directory, PostgreSQL in a scratch database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime.service import RuntimeSettings
from cosmogen.store import Database
from cosmogen.testing.echo import EchoServer, ThreadedEchoServer
from tests.conftest import truncate_all

LOOPBACK = EgressPolicy.from_strings(networks="127.0.0.1/32")


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeSettings:
    base = RuntimeSettings(egress=LOOPBACK, poll_interval_s=0.05)
    if request.param == "sqlite":
        return replace(base, data_dir=tmp_path / "data")
    url = request.getfixturevalue("pg_url")
    db = Database.open(url=url)
    try:
        truncate_all(db)
    finally:
        db.close()
    return replace(base, database_url=url)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with ThreadedEchoServer() as server:
        yield server
