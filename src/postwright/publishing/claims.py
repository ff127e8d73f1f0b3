"""Claiming due targets for a publish job, safely against edits, cancels and other workers.

A job names a post and the post generation it was queued for. Claiming flips the post's due SCHEDULED
targets to PUBLISHING in one statement that also checks the generation, so a job queued before an edit,
cancel, reschedule or delete claims nothing, and two workers never claim the same target.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.db.models import Post, PostTarget, SocialAccount

LEASE = timedelta(seconds=120)


async def claim_due_targets(
    session: AsyncSession, *, post_id: str, generation: int, worker_id: str, now: datetime, lease: timedelta = LEASE
) -> list[PostTarget]:
    live_post = (
        select(Post.id)
        .where(Post.id == post_id, Post.generation == generation, Post.deleted_at.is_(None), Post.canceled_at.is_(None))
        .scalar_subquery()
    )
    account_ready = (
        select(SocialAccount.id)
        .where(
            SocialAccount.id == PostTarget.social_account_id,
            or_(SocialAccount.paused_until.is_(None), SocialAccount.paused_until <= now),
        )
        .exists()
    )
    claimed = await session.scalars(
        update(PostTarget)
        .where(
            PostTarget.post_id == live_post,
            PostTarget.status == "SCHEDULED",
            PostTarget.scheduled_for <= now,
            or_(PostTarget.next_attempt_at.is_(None), PostTarget.next_attempt_at <= now),
            and_(account_ready),
        )
        .values(
            status="PUBLISHING",
            attempt_count=PostTarget.attempt_count + 1,
            last_attempt_at=now,
            lease_owner=worker_id,
            lease_expires_at=now + lease,
            sent_at=None,
        )
        .returning(PostTarget)
        .execution_options(synchronize_session=False)
    )
    return list(claimed)
