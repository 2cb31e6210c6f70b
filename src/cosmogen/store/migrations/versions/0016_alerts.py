"""Alerts and notifications: rules, channels (secrets sealed apart), the inbox, deliveries, dedup, marks.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28

domain/alerts.py decides; runtime/alerts.py watches and delivers; api/routes/alerts.py serves them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None

_RULE_KINDS = (
    "run_failed",
    "run_needs_attention",
    "token_refresh_failed",
    "grant_expiring",
    "error_rate",
    "rate_limit_saturated",
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts(name: str, nullable: bool) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _in(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("universe_id", sa.Text(), nullable=True),
        sa.Column("params", _json(), nullable=False),
        sa.Column("channel_ids", _json(), nullable=False),
        sa.Column("in_app", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("dedup_window_s", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
        sa.CheckConstraint(_in("kind", *_RULE_KINDS), name=op.f("ck_alert_rules_kind")),
    )
    op.create_index(op.f("ix_alert_rules_workspace_id"), "alert_rules", ["workspace_id"])
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("config", _json(), nullable=False),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_channels")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_notification_channels_workspace_id_name")),
        sa.CheckConstraint(
            _in("kind", "webhook", "slack", "email"), name=op.f("ck_notification_channels_kind")
        ),
    )
    op.create_table(
        "channel_secrets",
        sa.Column("channel_id", sa.Text(), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("channel_id", "field", name=op.f("pk_channel_secrets")),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["notification_channels.id"],
            name=op.f("fk_channel_secrets_channel_id_notification_channels"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_channel_secrets_key_id"), "channel_secrets", ["key_id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("rule_id", sa.Text(), nullable=True),
        sa.Column("launch_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("facts", _json(), nullable=False),
        sa.Column("in_app", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("repeats", sa.Integer(), nullable=False, server_default="0"),
        _ts("created_at", False),
        _ts("last_seen_at", False),
        _ts("read_at", True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        op.f("ix_notifications_workspace_id_created_at"), "notifications", ["workspace_id", "created_at"]
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("notification_id", sa.Text(), nullable=False),
        sa.Column("channel_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        _ts("next_attempt_at", True),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        _ts("lease_until", True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("sent_at", True),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            _in("kind", "webhook", "slack", "email", "teams"), name=op.f("ck_notification_deliveries_kind")
        ),
        sa.CheckConstraint(
            _in("status", "pending", "sent", "failed"), name=op.f("ck_notification_deliveries_status")
        ),
    )
    op.create_index(
        op.f("ix_notification_deliveries_notification_id"), "notification_deliveries", ["notification_id"]
    )
    op.create_index(
        op.f("ix_notification_deliveries_status_next_attempt_at"),
        "notification_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_table(
        "alert_dedup",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=False),
        sa.Column("notification_id", sa.Text(), nullable=False),
        _ts("sent_at", False),
        sa.PrimaryKeyConstraint("workspace_id", "dedup_key", name=op.f("pk_alert_dedup")),
    )
    op.create_table(
        "alert_marks",
        sa.Column("key", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_alert_marks")),
    )


def downgrade() -> None:
    op.drop_table("alert_marks")
    op.drop_table("alert_dedup")
    op.drop_index(
        op.f("ix_notification_deliveries_status_next_attempt_at"), table_name="notification_deliveries"
    )
    op.drop_index(op.f("ix_notification_deliveries_notification_id"), table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_index(op.f("ix_notifications_workspace_id_created_at"), table_name="notifications")
    op.drop_table("notifications")
    op.drop_index(op.f("ix_channel_secrets_key_id"), table_name="channel_secrets")
    op.drop_table("channel_secrets")
    op.drop_table("notification_channels")
    op.drop_index(op.f("ix_alert_rules_workspace_id"), table_name="alert_rules")
    op.drop_table("alert_rules")
