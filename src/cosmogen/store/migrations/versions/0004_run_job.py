"""runs.job_id: the queue job (PostgreSQL) whose worker executes the run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

A job may take over a `running` run only if it is the run's own job redelivered (its worker died) or
the run's job is no longer running: the check that keeps two workers off one run (journal.start_run).
Stays empty on SQLite, where the owning process dispatches runs itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("job_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("job_id")
