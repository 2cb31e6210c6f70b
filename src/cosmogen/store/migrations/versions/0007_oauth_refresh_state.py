"""OAuth refresh state of accounts (backoff after transient token-endpoint failures).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

`refresh_failures` counts consecutive transient failures of the token endpoint (5xx, 429, timeouts) and
`refresh_retry_at` is when the next attempt may be made; a successful refresh clears both. The grant and
the account's status are kept through such failures (reliability.md OA-06).
Self-contained (no import of cosmogen.store.tables).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("refresh_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("refresh_retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("refresh_retry_at")
        batch.drop_column("refresh_failures")
