"""Claiming due targets, safely against edits, cancels and other workers.

A job names a post and the post generation it was queued for. Claiming flips due SCHEDULED targets to
PUBLISHING in one statement that also checks the generation, so a job queued before an edit, cancel,
reschedule or delete claims nothing, and two workers never claim the same target (the row lock makes
the second UPDATE re-check `status = 'SCHEDULED'` and skip it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.db.models import PostTarget, SocialAccount
from postwright.publishing.status import TARGETS, RowState, any_ids, row_states


def _due(now: datetime) -> list[ColumnElement[bool]]:
    account_ready = (
        select(SocialAccount.id)
        .where(
            SocialAccount.id == PostTarget.social_account_id,
            or_(SocialAccount.paused_until.is_(None), SocialAccount.paused_until <= now),
        )
        .exists()
    )
    return [
        PostTarget.status == "SCHEDULED",
        PostTarget.scheduled_for <= now,
        or_(PostTarget.next_attempt_at.is_(None), PostTarget.next_attempt_at <= now),
        account_ready,
    ]


def _claimed_values(worker_id: str, now: datetime, lease: timedelta) -> dict[str, Any]:
    return {
        "status": "PUBLISHING",
        "attempt_count": PostTarget.attempt_count + 1,
        "auto_attempts": PostTarget.auto_attempts + 1,
        "last_attempt_at": now,
        "lease_owner": worker_id,
        "lease_expires_at": now + lease,
        "sent_at": None,
    }


async def claim_targets_of(
    session: AsyncSession, *, post_ids: list[str], worker_id: str, now: datetime, lease: timedelta
) -> list[RowState]:
    """Claim the due targets of posts the caller has locked and checked (generation, not deleted)."""
    if not post_ids:
        return []
    claimed = await session.execute(
        update(TARGETS)
        .where(PostTarget.post_id == any_ids(post_ids), *_due(now))
        .values(**_claimed_values(worker_id, now, lease))
        .returning(*TARGETS.c)
    )
    # Plain rows: a burst claims hundreds of targets per transaction, and nothing here needs ORM instances.
    return row_states(claimed)


async def expired_leases(session: AsyncSession, *, now: datetime, limit: int) -> list[PostTarget]:
    """PUBLISHING targets whose worker stopped answering, locked for this transaction."""
    rows = await session.scalars(
        select(PostTarget)
        .where(PostTarget.status == "PUBLISHING", PostTarget.lease_expires_at < now)
        .order_by(PostTarget.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list(rows)
