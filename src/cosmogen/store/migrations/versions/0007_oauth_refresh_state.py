"""OAuth refresh state of accounts (backoff after transient token-endpoint failures).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

Reserved so that work in parallel can chain its migrations; filled in by the change that needs it.
"""

from __future__ import annotations

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
