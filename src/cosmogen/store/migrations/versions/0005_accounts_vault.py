"""Accounts, their encrypted credentials, shared rate-limit state and OAuth flows in progress.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

Self-contained like 0001 (no import of cosmogen.store.tables); names spelt out in op.f().
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts(name: str, nullable: bool) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _in(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("auth_kind", sa.Text(), nullable=False),
        sa.Column("scopes", _json(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=False, server_default="sandbox"),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("settings", _json(), nullable=False),
        _ts("token_expires_at", True),
        _ts("last_refreshed_at", True),
        sa.Column("last_error", _json(), nullable=True),
        _ts("verified_at", True),
        sa.Column("refresh_lease_owner", sa.Text(), nullable=True),
        _ts("refresh_lease_expires_at", True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_accounts_workspace_id_name")),
        sa.CheckConstraint(
            _in("auth_kind", "oauth2", "api_key", "basic", "none"), name=op.f("ck_accounts_auth_kind")
        ),
        sa.CheckConstraint(_in("tier", "sandbox", "production"), name=op.f("ck_accounts_tier")),
        sa.CheckConstraint(
            _in("status", "pending", "connected", "expired", "error", "disabled"),
            name=op.f("ck_accounts_status"),
        ),
    )
    op.create_index(op.f("ix_accounts_workspace_id_provider"), "accounts", ["workspace_id", "provider"])
    op.create_table(
        "credentials",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.PrimaryKeyConstraint("account_id", "field", name=op.f("pk_credentials")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_credentials_account_id_accounts"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_credentials_key_id"), "credentials", ["key_id"])
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.Column("blocked_until", sa.Float(), nullable=True),
        _ts("updated_at", False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )
    op.create_table(
        "oauth_flows",
        sa.Column("state_hash", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("verifier_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("verifier_wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("return_to", sa.Text(), nullable=True),
        _ts("created_at", False),
        _ts("expires_at", False),
        _ts("used_at", True),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oauth_flows")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_oauth_flows_account_id_accounts"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("oauth_flows")
    op.drop_table("rate_limits")
    op.drop_index(op.f("ix_credentials_key_id"), table_name="credentials")
    op.drop_table("credentials")
    op.drop_index(op.f("ix_accounts_workspace_id_provider"), table_name="accounts")
    op.drop_table("accounts")
