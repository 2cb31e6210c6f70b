"""Alerts, notifications and live metrics.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28

Reserved so that work in parallel can chain its migrations; filled in by the change that needs it.
"""

from __future__ import annotations

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
