"""Fixtures shared by every tier: a scratch PostgreSQL database per test session.

PostgreSQL: one database per test session, `cosmogen_test_<pid>_<random>`, created through the
`postgres` maintenance database and dropped at the end, so concurrent test runs never collide.
Set COSMOGEN_TEST_POSTGRES_URL to point at another server (it must allow CREATE DATABASE).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cosmogen.store import Database, migrate, tables

# SSRF-05: every outbound connection of the suite is audited (tests/egress_audit.py).
pytest_plugins = ("tests.egress_audit",)

ADMIN_URL = os.environ.get(
    "COSMOGEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DIALECTS = ["sqlite", "postgresql"]


class PostgresServer:
    """Creates and drops scratch databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"cosmogen_test_{os.getpid()}_{secrets.token_hex(4)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        assert name in self.created, "only drop databases this session created"
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer(ADMIN_URL)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> str:
    """The session's database, migrated to head once."""
    url = pg_server.create_database()
    db = Database.open(url=url)
    try:
        migrate.upgrade(db)
    finally:
        db.close()
    return url


PROCRASTINATE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


def truncate_all(db: Database) -> None:
    """Empty every table (PostgreSQL), so a test starts from nothing without recreating the schema."""
    # procrastinate's tables too: a job left by an earlier test would be taken by this test's workers.
    owned = [table.name for table in tables.metadata.sorted_tables]
    names = ", ".join(f'"{name}"' for name in [*owned, *PROCRASTINATE_TABLES])
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        # As a fresh migration leaves it: the "default" workspace the runtime's own rows belong to.
        default = {"id": "default", "name": "Default", "created_at": tables.utcnow()}
        conn.execute(tables.workspaces.insert().values(**default))


@pytest.fixture
def clean_pg_url(pg_url: str) -> str:
    """The session's PostgreSQL database, emptied before the test (not after: a crashed test cannot leak)."""
    db = Database.open(url=pg_url)
    try:
        truncate_all(db)
    finally:
        db.close()
    return pg_url
