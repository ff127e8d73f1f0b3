from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from postwright.db.base import Base, TimestampMixin


class SocialAccount(TimestampMixin, Base):
    __tablename__ = "social_accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(32))
    handle: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(320))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    external_id: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Per-account backoff after a platform 429: due targets of this account wait until then.
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
