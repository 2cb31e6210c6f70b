"""run_events also holds a workspace's events: an account's or a launch's status changing outside any run.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28

Such an event has no run and no seq, and names its workspace instead. It takes its id from the same
sequence as run events, so the live stream's one cursor (`after=<id>`) covers both and a reconnecting
client misses neither.

SQLite rebuilds the table to relax NOT NULL. The rebuilt table keeps AUTOINCREMENT and the highest id
ever handed out (sqlite_sequence), so an id is still never reused after the newest rows are deleted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | None = None
depends_on: str | None = None

_HIGHEST = sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'run_events'")
_KEEP_HIGHEST = sa.text("UPDATE sqlite_sequence SET seq = :seq WHERE name = 'run_events' AND seq < :seq")


def _rebuild(nullable: bool) -> None:
    bind = op.get_bind()
    highest = bind.execute(_HIGHEST).scalar() if bind.dialect.name == "sqlite" else None
    with op.batch_alter_table("run_events", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("run_id", existing_type=sa.Text(), nullable=nullable)
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=nullable)
        if nullable:
            batch.add_column(sa.Column("workspace_id", sa.Text(), nullable=True))
        else:
            batch.drop_column("workspace_id")
    if highest is not None:
        bind.execute(_KEEP_HIGHEST, {"seq": highest})


def upgrade() -> None:
    _rebuild(nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM run_events WHERE run_id IS NULL")
    _rebuild(nullable=False)
