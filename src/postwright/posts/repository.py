"""Every query of the posts domain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace

from sqlalchemy import Select, and_, any_, cast, exists, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from postwright.db.models import MediaAsset, Post, PostMedia, PostTarget, PublishAttempt, SocialAccount

# Every media id a target's thread parts use (platformOptions.thread[*].mediaIds[*]), as a JSON path.
THREAD_MEDIA_PATH = "$.thread[*].mediaIds[*]"


_READ_POST = "SELECT * FROM posts WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL"
_READ_TARGETS = "SELECT * FROM post_targets WHERE post_id = $1 ORDER BY position"
_READ_MEDIA = 'SELECT * FROM post_media WHERE post_id = $1 ORDER BY "order"'


class PostsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _with_children(self, query: Select[tuple[Post]]) -> Select[tuple[Post]]:
        return query.options(selectinload(Post.targets), selectinload(Post.media))

    async def get(self, workspace_id: str, post_id: str, *, for_update: bool = False) -> Post | None:
        query = self._with_children(
            select(Post).where(Post.id == post_id, Post.workspace_id == workspace_id, Post.deleted_at.is_(None))
        )
        if for_update:
            query = query.with_for_update(of=Post)
        return await self.session.scalar(query)

    async def read(self, workspace_id: str, post_id: str) -> SimpleNamespace | None:
        """A post with its targets and media as plain rows, for rendering only (the API's hottest read).

        Same columns and order as `get()`, without ORM instances: straight asyncpg on the session's own
        connection and transaction, three prepared statements.
        """
        connection = await self.session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        post = await raw.fetchrow(_READ_POST, post_id, workspace_id)  # type: ignore[union-attr]
        if post is None:
            return None
        targets = await raw.fetch(_READ_TARGETS, post_id)  # type: ignore[union-attr]
        media = await raw.fetch(_READ_MEDIA, post_id)  # type: ignore[union-attr]
        return SimpleNamespace(
            **dict(post),
            targets=[SimpleNamespace(**dict(t)) for t in targets],
            media=[SimpleNamespace(**dict(m)) for m in media],
        )

    async def lock_targets(self, post_id: str) -> list[PostTarget]:
        rows = await self.session.scalars(
            select(PostTarget)
            .where(PostTarget.post_id == post_id)
            .order_by(PostTarget.position)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list(rows)

    def list_query(
        self,
        workspace_id: str,
        *,
        status: str | None,
        platform: str | None,
        social_account_id: str | None,
        scheduled_from: datetime | None,
        scheduled_to: datetime | None,
        text: str | None,
    ) -> Select[tuple[Post]]:
        query = self._with_children(select(Post).where(Post.workspace_id == workspace_id, Post.deleted_at.is_(None)))
        if status:
            query = query.where(Post.status == status)
        if platform or social_account_id:
            target_filter = [PostTarget.post_id == Post.id]
            if platform:
                target_filter.append(PostTarget.platform == platform)
            if social_account_id:
                target_filter.append(PostTarget.social_account_id == social_account_id)
            query = query.where(exists().where(*target_filter))
        if scheduled_from:
            query = query.where(Post.scheduled_at >= scheduled_from)
        if scheduled_to:
            query = query.where(Post.scheduled_at <= scheduled_to)
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(Post.caption.ilike(f"%{escaped}%", escape="\\"))
        return query

    async def accounts(self, workspace_id: str, ids: Sequence[str]) -> dict[str, SocialAccount]:
        rows = await self.session.scalars(
            select(SocialAccount).where(
                SocialAccount.workspace_id == workspace_id,
                SocialAccount.id.in_(ids),
                SocialAccount.deleted_at.is_(None),
            )
        )
        return {a.id: a for a in rows}

    async def media(self, workspace_id: str, ids: Sequence[str]) -> dict[str, MediaAsset]:
        if not ids:
            return {}
        rows = await self.session.scalars(
            select(MediaAsset).where(
                MediaAsset.workspace_id == workspace_id,
                MediaAsset.id.in_(ids),
                MediaAsset.deleted_at.is_(None),
            )
        )
        return {m.id: m for m in rows}

    async def attempts(self, post_id: str) -> list[PublishAttempt]:
        rows = await self.session.scalars(
            select(PublishAttempt).where(PublishAttempt.post_id == post_id).order_by(PublishAttempt.id)
        )
        return list(rows)

    async def media_used_elsewhere(self, media_ids: Sequence[str], post_id: str) -> set[str]:
        """Media among `media_ids` that another live post still uses (library or per-target)."""
        if not media_ids:
            return set()
        linked = await self.session.scalars(
            select(PostMedia.media_asset_id)
            .join(Post, Post.id == PostMedia.post_id)
            .where(PostMedia.media_asset_id.in_(media_ids), Post.id != post_id, Post.deleted_at.is_(None))
        )
        used = set(linked)
        per_target = await self.session.scalars(
            select(func.unnest(PostTarget.media_ids))
            .join(Post, Post.id == PostTarget.post_id)
            .where(Post.id != post_id, Post.deleted_at.is_(None), PostTarget.media_ids.overlap(list(media_ids)))
        )
        used.update(m for m in per_target if m in media_ids)
        in_threads = await self.session.scalars(
            select(
                func.jsonb_path_query(
                    PostTarget.platform_options, cast(literal(THREAD_MEDIA_PATH), JSONPATH), type_=JSONB
                )
            )
            .join(Post, Post.id == PostTarget.post_id)
            .where(Post.id != post_id, Post.deleted_at.is_(None), PostTarget.platform_options.has_key("thread"))
        )
        used.update(m for m in in_threads if m in media_ids)
        return used

    async def targets_using_media(self, media_id: str, statuses: Sequence[str]) -> int:
        """Live targets in `statuses` that will still send this media, plus published threads not yet done."""
        in_thread = PostTarget.platform_options.contains({"thread": [{"mediaIds": [media_id]}]})
        thread_unfinished = or_(
            PostTarget.thread_state.contains([{"state": "PENDING"}]),
            PostTarget.thread_state.contains([{"state": "SENDING"}]),
        )
        count = await self.session.scalar(
            select(func.count())
            .select_from(PostTarget)
            .join(Post, Post.id == PostTarget.post_id)
            .where(
                Post.deleted_at.is_(None),
                or_(
                    and_(
                        PostTarget.status.in_(statuses),
                        or_(
                            literal(media_id) == any_(PostTarget.media_ids),
                            exists().where(PostMedia.post_id == Post.id, PostMedia.media_asset_id == media_id),
                            in_thread,
                        ),
                    ),
                    and_(PostTarget.status == "PUBLISHED", in_thread, thread_unfinished),
                ),
            )
        )
        return int(count or 0)
