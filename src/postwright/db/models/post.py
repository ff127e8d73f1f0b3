from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from postwright.db.base import Base, TimestampMixin


class Post(TimestampMixin, Base):
    __tablename__ = "posts"
    __table_args__ = (
        Index("ix_posts_workspace_live", "workspace_id", "id", postgresql_where=text("deleted_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    created_by_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(24))
    caption: Mapped[str | None] = mapped_column(Text)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    timezone: Mapped[str | None] = mapped_column(String(64))
    workflow_id: Mapped[str | None] = mapped_column(String(64))
    pending_workflow_id: Mapped[str | None] = mapped_column(String(64))
    approved_by_user_id: Mapped[str | None] = mapped_column(String(40))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    awaiting_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    created_via_api: Mapped[bool] = mapped_column(Boolean, default=True)
    created_via_flat_shape: Mapped[bool] = mapped_column(Boolean, default=False)
    media_alt_text: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Bumped by every edit, cancel, reschedule and delete: a queued job carrying an older
    # generation finds nothing to do.
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    targets: Mapped[list[PostTarget]] = relationship(
        back_populates="post", lazy="raise", order_by="PostTarget.position", cascade="all, delete-orphan"
    )
    media: Mapped[list[PostMedia]] = relationship(
        lazy="raise", order_by="PostMedia.order", cascade="all, delete-orphan"
    )


class PostMedia(Base):
    __tablename__ = "post_media"

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    media_asset_id: Mapped[str] = mapped_column(ForeignKey("media_assets.id"), primary_key=True, index=True)
    order: Mapped[int] = mapped_column(Integer)
    alt_text: Mapped[str | None] = mapped_column(Text)


class PostTarget(TimestampMixin, Base):
    __tablename__ = "post_targets"
    __table_args__ = (
        Index("ix_post_targets_due", "scheduled_for", postgresql_where=text("status = 'SCHEDULED'")),
        Index("ix_post_targets_account", "social_account_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[str] = mapped_column(String(40))
    social_account_id: Mapped[str] = mapped_column(ForeignKey("social_accounts.id"))
    platform: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    caption_override: Mapped[str | None] = mapped_column(Text)
    first_comment: Mapped[str | None] = mapped_column(Text)
    first_comment_error: Mapped[str | None] = mapped_column(Text)
    first_comment_attempt: Mapped[int] = mapped_column(Integer, default=0)
    first_comment_last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_comment_external_id: Mapped[str | None] = mapped_column(String(255))
    # PENDING (queued) → SENDING (request may leave) → DONE | FAILED. A SENDING comment found again after
    # a crash is not re-sent: its outcome is unknown and the user decides.
    first_comment_state: Mapped[str | None] = mapped_column(String(12))
    first_comment_material: Mapped[str | None] = mapped_column(String(255))
    platform_options: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # One entry per `platformOptions.thread` part once the root is PUBLISHED (see publishing/threads.py).
    thread_state: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    media_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    external_post_id: Mapped[str | None] = mapped_column(String(255))
    external_url: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # Automatic tries since the last user action (schedule, retry); bounds the retry policy.
    auto_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Exactly-once bookkeeping for the worker: who holds the target and until when, and whether the
    # current attempt's request may have left (sent_at set before the request goes out).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    idempotency_material: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[int | None] = mapped_column(BigInteger)

    post: Mapped[Post] = relationship(back_populates="targets", lazy="raise")


class PublishAttempt(Base):
    """History of publish attempts; outlives target rows (PATCH rebuilds targets)."""

    __tablename__ = "publish_attempts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    target_id: Mapped[str] = mapped_column(String(40), index=True)
    social_account_id: Mapped[str] = mapped_column(String(40))
    platform: Mapped[str] = mapped_column(String(32))
    attempt_number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20), default="PUBLISH")  # PUBLISH | FIRST_COMMENT | LOOKUP
    status: Mapped[str] = mapped_column(String(20))  # STARTED | SENT | SUCCEEDED | FAILED | RETRYING | UNKNOWN
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    external_post_id: Mapped[str | None] = mapped_column(String(255))
    worker_id: Mapped[str | None] = mapped_column(String(64))
