"""post_targets.thread_state: progress of a thread's follow-up parts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("post_targets", sa.Column("thread_state", postgresql.JSONB(), nullable=True))
    # The worker's follow-up sweep looks only at published targets with something still to post.
    op.create_index(
        "ix_post_targets_follow_ups",
        "post_targets",
        ["updated_at"],
        postgresql_where=sa.text(
            "status = 'PUBLISHED' AND (first_comment_state IN ('PENDING', 'SENDING') "
            """OR thread_state @> '[{"state": "PENDING"}]' OR thread_state @> '[{"state": "SENDING"}]')"""
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_post_targets_follow_ups", table_name="post_targets")
    op.drop_column("post_targets", "thread_state")
