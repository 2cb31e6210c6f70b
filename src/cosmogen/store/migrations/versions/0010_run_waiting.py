"""runs.waiting: why a running run is waiting and until when (a shared rate limit, a 429's Retry-After).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28

Set while a call waits for its rate-limit token (only for waits long enough to matter) and cleared when
the call's outcome is recorded, so `cosmogen runs show` and the dashboard can say "waiting: rate limit
until 14:02:07" instead of an unexplained `running`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("waiting", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("waiting")
