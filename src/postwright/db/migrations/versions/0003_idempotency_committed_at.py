"""idempotency_records.committed_at: the first request's change committed (its response may be lost)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("idempotency_records", sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("idempotency_records", "committed_at")
