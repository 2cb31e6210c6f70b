"""vault_keys: the key-encryption keys the database knows, with a check value for each.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

A process compares the check value of every key it was given with this table before it writes
anything, so a wrong or missing key stops start-up instead of producing unreadable credentials.
`version` orders the keys (the newest non-retired one wraps new data keys; rotation re-wraps rows
whose key is older); a retired key may no longer wrap or unwrap anything.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "vault_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("check_value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_vault_keys")),
        sa.UniqueConstraint("version", name=op.f("uq_vault_keys_version")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_vault_keys_version_positive")),
    )


def downgrade() -> None:
    op.drop_table("vault_keys")
