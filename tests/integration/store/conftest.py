"""Fixtures: every store test runs on SQLite (a file in tmp_path) and on PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmogen.store import Database, GroupCommitWriter, migrate
from tests.conftest import DIALECTS, PostgresServer, truncate_all


@pytest.fixture(params=DIALECTS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: a fresh SQLite file, or the session's PostgreSQL database truncated."""
    if request.param == "sqlite":
        database = Database.open(data_dir=tmp_path)
        migrate.upgrade(database)
    else:
        database = Database.open(url=request.getfixturevalue("pg_url"))
        truncate_all(database)  # before, not after: a crashed earlier test cannot leak rows into this one
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(params=DIALECTS)
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with no schema at all (a new PostgreSQL database per test), for migration tests."""
    if request.param == "sqlite":
        database = Database.open(data_dir=tmp_path)
        try:
            yield database
        finally:
            database.close()
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    database = Database.open(url=url)
    try:
        yield database
    finally:
        database.close()
        server.drop_database(url)


@pytest.fixture
def writer(db: Database) -> Iterator[GroupCommitWriter]:
    w = GroupCommitWriter(db)
    try:
        yield w
    finally:
        w.close()
