"""Trigger fires: one row per (trigger, tick) the scheduler fired or queued.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Self-contained like 0001 (no import of cosmogen.store.tables); names spelt out in op.f().
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "trigger_fires",
        sa.Column("trigger_id", sa.Text(), nullable=False),
        sa.Column("tick", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("trigger_id", "tick", name=op.f("pk_trigger_fires")),
        sa.ForeignKeyConstraint(
            ["trigger_id"],
            ["triggers.id"],
            name=op.f("fk_trigger_fires_trigger_id_triggers"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('claimed', 'started', 'failed', 'deferred')", name=op.f("ck_trigger_fires_status")
        ),
    )


def downgrade() -> None:
    op.drop_table("trigger_fires")
