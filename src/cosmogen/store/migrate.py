"""Schema migrations (Alembic) run from code: no alembic.ini, no `alembic` command needed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from cosmogen.store.database import SQLITE_BEGIN, Database

SCRIPT_LOCATION = "cosmogen.store:migrations"  # package-relative, so it works from a wheel too

# Arbitrary constant: the PostgreSQL advisory lock that serialises concurrent upgraders (several
# workers starting at once must not race to create the same tables).
_PG_MIGRATION_LOCK = 0x636F736D6F67  # "cosmog"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@contextmanager
def _locked_transaction(db: Database) -> Iterator[Connection]:
    """One transaction for the whole migration (DDL is transactional on both dialects), holding the
    write lock from the start: BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL."""
    with db.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            if db.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            yield conn


def upgrade(db: Database, revision: str = "head") -> None:
    with _locked_transaction(db) as conn:
        command.upgrade(_config(conn), revision)


def downgrade(db: Database, revision: str) -> None:
    with _locked_transaction(db) as conn:
        command.downgrade(_config(conn), revision)


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for an empty (never migrated) database."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def revisions() -> list[str]:
    """Every revision id, oldest first; the last one is head."""
    scripts = ScriptDirectory.from_config(_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def is_current(db: Database) -> bool:
    """Whether the database is at head: a process should refuse to run against an older schema."""
    return current_revision(db) == revisions()[-1]
