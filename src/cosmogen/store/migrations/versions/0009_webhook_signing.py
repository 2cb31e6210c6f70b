"""Signed webhooks and idempotency keys.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28

- `webhook_secrets`: each webhook trigger's HMAC signing secrets, sealed by the vault (like credentials).
- `idempotency_keys`: Idempotency-Key results per (workspace, scope, key), with their expiry.
- Webhook triggers made before this revision have no signing secret, so their stored spec is marked
  `"signed": false`: they keep accepting unsigned deliveries until `cosmogen launches
  rotate-webhook-secret` gives them a secret (and makes signatures required). New webhook triggers are
  signed unless their spec says otherwise.

Self-contained like 0001 (no import of cosmogen.store.tables); names spelt out in op.f().
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts(name: str, nullable: bool) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


_triggers = sa.table(
    "triggers", sa.column("id", sa.Text()), sa.column("kind", sa.Text()), sa.column("spec", _json())
)


def _rewrite_webhook_specs(rewrite: Any) -> None:
    conn = op.get_bind()
    query = sa.select(_triggers.c.id, _triggers.c.spec).where(_triggers.c.kind == "webhook")
    for row in conn.execute(query).all():
        conn.execute(
            sa.update(_triggers).where(_triggers.c.id == row.id).values(spec=rewrite(dict(row.spec)))
        )


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("trigger_id", sa.Text(), nullable=False),
        sa.Column("secret_id", sa.Text(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        _ts("created_at", False),
        _ts("expires_at", True),
        sa.PrimaryKeyConstraint("trigger_id", "secret_id", name=op.f("pk_webhook_secrets")),
        sa.ForeignKeyConstraint(
            ["trigger_id"],
            ["triggers.id"],
            name=op.f("fk_webhook_secrets_trigger_id_triggers"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_webhook_secrets_key_id"), "webhook_secrets", ["key_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        _ts("lease_until", True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", _json(), nullable=True),
        _ts("created_at", False),
        _ts("expires_at", False),
        sa.PrimaryKeyConstraint("workspace_id", "scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"])
    # Existing webhook triggers have no secret: they stay unsigned (working as before) until given one.
    _rewrite_webhook_specs(lambda spec: {**spec, "signed": False})


def downgrade() -> None:
    # The older release knows only {"kind": "webhook"} (and accepts unsigned deliveries).
    _rewrite_webhook_specs(lambda spec: {"kind": "webhook"})
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_webhook_secrets_key_id"), table_name="webhook_secrets")
    op.drop_table("webhook_secrets")
