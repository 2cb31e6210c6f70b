"""What the resource API needs (archived universes, deletion confirmations).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28

Reserved so that work in parallel can chain its migrations; filled in by the change that needs it.
"""

from __future__ import annotations

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
