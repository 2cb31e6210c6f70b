"""OAuth connect and disconnect: the session a flow is bound to, and the revocation outbox.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28

- oauth_flows.session_hash: sha256 of the browser session (or CLI process) that started the flow; a
  callback from any other session is refused before any token request (reliability.md OA-09).
- oauth_flows.expects_iss: the authorization server sends RFC 9207's `iss`, which must then equal the
  flow's issuer (OA-10).
- oauth_revocations: a grant to revoke at the provider (RFC 7009) after a disconnect. The token waits,
  encrypted, in the account's credential field `field` until the revocation endpoint accepts it, so a
  provider that is down when the person disconnects still gets the revocation later (OA-12).

Self-contained like 0001 (no import of cosmogen.store.tables); names spelt out in op.f().
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts(name: str, nullable: bool) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("oauth_flows") as batch:
        batch.add_column(sa.Column("session_hash", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expects_iss", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "oauth_revocations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("token_type_hint", sa.Text(), nullable=False),
        sa.Column("revoke_url", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        _ts("next_attempt_at", True),
        sa.Column("last_error", _json(), nullable=True),
        _ts("created_at", False),
        _ts("done_at", True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_revocations")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_oauth_revocations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed')", name=op.f("ck_oauth_revocations_status")
        ),
    )
    op.create_index(
        op.f("ix_oauth_revocations_status_next_attempt_at"),
        "oauth_revocations",
        ["status", "next_attempt_at"],
    )
    op.create_index(op.f("ix_oauth_revocations_account_id"), "oauth_revocations", ["account_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_oauth_revocations_account_id"), table_name="oauth_revocations")
    op.drop_index(op.f("ix_oauth_revocations_status_next_attempt_at"), table_name="oauth_revocations")
    op.drop_table("oauth_revocations")
    with op.batch_alter_table("oauth_flows") as batch:
        batch.drop_column("expects_iss")
        batch.drop_column("session_hash")
