"""PostgreSQL only: procrastinate's schema (jobs, workers, events), which dispatches runs to workers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

The SQL is procrastinate's own `schema.sql` for the pinned version (pyproject.toml). Upgrading
procrastinate to a version with schema changes needs a new revision here that applies the files
procrastinate ships under `procrastinate/sql/migrations/`. SQLite needs none of it: the embedded
runtime dispatches runs in its own process.
"""

from __future__ import annotations

from typing import Any

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)
_TYPES = ("procrastinate_job_to_defer_v1", "procrastinate_job_event_type", "procrastinate_job_status")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # Imported here: alembic loads every revision file on each start, and SQLite never needs it.
    from procrastinate.schema import SchemaManager

    # Straight to the driver, on alembic's connection and in its transaction: the script is many
    # statements and contains `%` and `:name` text that SQLAlchemy would read as parameters.
    _driver(bind).execute(SchemaManager.get_schema())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    raw = _driver(bind)
    raw.execute(f"DROP TABLE IF EXISTS {', '.join(_TABLES)} CASCADE")
    functions = raw.execute(
        "SELECT oid::regprocedure::text FROM pg_proc WHERE proname LIKE 'procrastinate\\_%'"
    ).fetchall()
    for (signature,) in functions:
        raw.execute(f"DROP FUNCTION IF EXISTS {signature} CASCADE")
    raw.execute(f"DROP TYPE IF EXISTS {', '.join(_TYPES)} CASCADE")


def _driver(bind: Any) -> Any:
    """The psycopg connection under alembic's (same transaction)."""
    return bind.connection.driver_connection
