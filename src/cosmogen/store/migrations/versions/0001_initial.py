"""Initial schema: universes and versions, launches and triggers, runs and their journal.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Self-contained on purpose: it does not import cosmogen.store.tables, so later edits to the tables
cannot change what this revision creates. Constraint names follow tables.NAMING_CONVENTION and are
spelt out in full inside op.f() ("final"): env.py's target metadata carries that naming convention, and
without op.f() Alembic would apply it a second time (ck_runs_ck_runs_status).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _in(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


DEPLOYMENT = ("draft", "live", "paused", "archived")


def upgrade() -> None:
    op.create_table(
        "universes",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False, server_default="default"),
        sa.Column("name", sa.Text(), nullable=False),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.Column("active_version_id", sa.Text(), nullable=True),
        sa.Column("deployment_status", sa.Text(), nullable=False, server_default="draft"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_universes")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_universes_workspace_id_name")),
        sa.CheckConstraint(
            _in("deployment_status", *DEPLOYMENT), name=op.f("ck_universes_deployment_status")
        ),
    )
    op.create_table(
        "universe_versions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("universe_id", sa.Text(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("document", _json(), nullable=False),
        sa.Column("document_sha256", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("last_run_summary", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_universe_versions")),
        sa.ForeignKeyConstraint(
            ["universe_id"], ["universes.id"], name=op.f("fk_universe_versions_universe_id_universes")
        ),
        sa.UniqueConstraint("universe_id", "number", name=op.f("uq_universe_versions_universe_id_number")),
        sa.CheckConstraint("number >= 1", name=op.f("ck_universe_versions_number_positive")),
    )
    op.create_table(
        "launches",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("universe_id", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Text(), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="draft"),
        _ts("created_at", False),
        _ts("updated_at", False),
        _ts("stopped_at", True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_launches")),
        sa.ForeignKeyConstraint(
            ["universe_id"], ["universes.id"], name=op.f("fk_launches_universe_id_universes")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["universe_versions.id"], name=op.f("fk_launches_version_id_universe_versions")
        ),
        sa.CheckConstraint(_in("status", *DEPLOYMENT), name=op.f("ck_launches_status")),
    )
    op.create_index(op.f("ix_launches_universe_id"), "launches", ["universe_id"])
    op.create_table(
        "triggers",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("launch_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("webhook_token_hash", sa.Text(), nullable=True),
        _ts("next_fire_at", True),
        _ts("last_fired_at", True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
        sa.ForeignKeyConstraint(
            ["launch_id"], ["launches.id"], name=op.f("fk_triggers_launch_id_launches"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("webhook_token_hash", name=op.f("uq_triggers_webhook_token_hash")),
        sa.CheckConstraint(
            _in("kind", "manual", "interval", "cron", "webhook"), name=op.f("ck_triggers_kind")
        ),
    )
    op.create_index(op.f("ix_triggers_launch_id"), "triggers", ["launch_id"])
    op.create_index(op.f("ix_triggers_next_fire_at"), "triggers", ["next_fire_at"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("universe_id", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Text(), nullable=False),
        sa.Column("launch_id", sa.Text(), nullable=True),
        sa.Column("trigger_id", sa.Text(), nullable=True),
        sa.Column("parent_run_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False, server_default="queued"),
        sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("event", _json(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("state", _json(), nullable=False),
        sa.Column("requested_action", sa.Text(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        _ts("lease_expires_at", True),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        _ts("created_at", False),
        _ts("started_at", True),
        _ts("finished_at", True),
        _ts("updated_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.ForeignKeyConstraint(
            ["universe_id"], ["universes.id"], name=op.f("fk_runs_universe_id_universes")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["universe_versions.id"], name=op.f("fk_runs_version_id_universe_versions")
        ),
        sa.ForeignKeyConstraint(["launch_id"], ["launches.id"], name=op.f("fk_runs_launch_id_launches")),
        sa.CheckConstraint(
            _in(
                "status", "queued", "running", "paused", "succeeded", "failed", "cancelled", "needs_attention"
            ),
            name=op.f("ck_runs_status"),
        ),
        sa.CheckConstraint(_in("requested_action", "pause", "cancel"), name=op.f("ck_runs_requested_action")),
    )
    op.create_index(op.f("ix_runs_status"), "runs", ["status"])
    op.create_index(op.f("ix_runs_launch_id"), "runs", ["launch_id"])
    op.create_index(op.f("ix_runs_universe_id"), "runs", ["universe_id"])
    op.create_table(
        "node_results",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        _ts("started_at", False),
        _ts("finished_at", True),
        sa.PrimaryKeyConstraint("run_id", "node_id", name=op.f("pk_node_results")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_node_results_run_id_runs"), ondelete="CASCADE"
        ),
    )
    op.create_table(
        "effects",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("binding_id", sa.Text(), nullable=False),
        sa.Column("attempt_group", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="intent"),
        sa.Column("response", _json(), nullable=True),
        _ts("created_at", False),
        _ts("completed_at", True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_effects")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_effects_run_id_runs"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_effects_idempotency_key")),
        sa.CheckConstraint(
            _in("status", "intent", "succeeded", "failed", "ambiguous", "marked_done", "cancelled"),
            name=op.f("ck_effects_status"),
        ),
    )
    op.create_index(op.f("ix_effects_run_id"), "effects", ["run_id"])
    op.create_table(
        "run_events",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_events")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "seq", name=op.f("uq_run_events_run_id_seq")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("trigger_id", sa.Text(), nullable=False),
        sa.Column("delivery_key", sa.Text(), nullable=False),
        _ts("received_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.ForeignKeyConstraint(
            ["trigger_id"],
            ["triggers.id"],
            name=op.f("fk_webhook_deliveries_trigger_id_triggers"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "trigger_id", "delivery_key", name=op.f("uq_webhook_deliveries_trigger_id_delivery_key")
        ),
    )


def downgrade() -> None:
    # Children before parents, so foreign keys never point at a dropped table.
    for table in (
        "webhook_deliveries",
        "run_events",
        "effects",
        "node_results",
        "runs",
        "triggers",
        "launches",
        "universe_versions",
        "universes",
    ):
        op.drop_table(table)
