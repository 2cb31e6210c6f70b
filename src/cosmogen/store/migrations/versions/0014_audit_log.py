"""The audit log and account API state.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28

Reserved so that work in parallel can chain its migrations; filled in by the change that needs it.
"""

from __future__ import annotations

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
