"""Sign-in: owner setup, sessions, login throttling.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28

Reserved so that work in parallel can chain its migrations; filled in by the change that needs it.
"""

from __future__ import annotations

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
