"""No schema change: this revision was reserved for work done in parallel that needed no table.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28

Kept (empty) so that the revision chain stays the same for every database already migrated past it.
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
