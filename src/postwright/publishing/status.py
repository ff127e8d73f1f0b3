"""Keeping a post's aggregate status right after its targets change (always under the post's row lock)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.db.models import Post, PostTarget
from postwright.posts.status import PostStatus, derive_post_status


async def lock_post(session: AsyncSession, post_id: str, *, skip_locked: bool = False) -> Post | None:
    """Lock order everywhere is post row first, then target rows, so cancel and the worker never deadlock."""
    return await session.scalar(
        select(Post)
        .where(Post.id == post_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )


async def lock_posts(session: AsyncSession, post_ids: list[str], *, skip_locked: bool = False) -> list[Post]:
    """Several post rows, locked in id order (so two batches never wait on each other in a cycle)."""
    if not post_ids:
        return []
    rows = await session.scalars(
        select(Post)
        .where(Post.id.in_(sorted(set(post_ids))))
        .order_by(Post.id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def lock_target(session: AsyncSession, target_id: str) -> PostTarget | None:
    """A target's current row, locked (take the post's lock first)."""
    return await session.scalar(
        select(PostTarget).where(PostTarget.id == target_id).with_for_update().execution_options(populate_existing=True)
    )


async def recompute_post(session: AsyncSession, post: Post) -> None:
    await recompute_posts(session, [post])


async def recompute_posts(session: AsyncSession, posts: list[Post]) -> None:
    """Re-derive each post's status from all its targets (one query for all of them)."""
    if not posts:
        return
    await session.flush()
    rows = (
        await session.execute(
            select(PostTarget.post_id, PostTarget.status, PostTarget.published_at).where(
                PostTarget.post_id.in_([p.id for p in posts])
            )
        )
    ).all()
    by_post: dict[str, list[Any]] = {}
    for row in rows:
        by_post.setdefault(row.post_id, []).append(row)
    for post in posts:
        apply_derived_status(post, by_post.get(post.id, []))


def apply_derived_status(post: Post, targets: Sequence[Any]) -> None:
    """Set the post's status (and publishedAt) from its targets' `status` and `published_at`."""
    post.status = derive_post_status(
        [t.status for t in targets], awaiting_approval=post.awaiting_approval, canceled=post.canceled_at is not None
    ).value
    if post.status in (PostStatus.PUBLISHED, PostStatus.PARTIALLY_PUBLISHED):
        published = [t.published_at for t in targets if t.published_at]
        post.published_at = max(published) if published else post.published_at
