"""First comments: posted as a reply once the main post is PUBLISHED, never twice.

A comment moves PENDING → SENDING → DONE | FAILED. SENDING is recorded before the request leaves; a
comment found SENDING after a worker died may exist on the platform, so it is marked FAILED with an
"unknown" message for the user to check and retry, and never re-sent automatically. A failure never
touches the target's PUBLISHED state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwright.db.models import PostTarget, SocialAccount
from postwright.db.session import unit_of_work
from postwright.kit.clock import utcnow
from postwright.publishing.credentials import CredentialStore
from postwright.publishing.platforms.base import (
    OutboundPost,
    OutcomeUnknown,
    PermanentError,
    PlatformAdapter,
    PublishResult,
    ReauthRequired,
    RetryableError,
)
from postwright.publishing.status import lock_target

log = structlog.get_logger("postwright.publishing")


class FirstComments:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        credentials: CredentialStore,
        adapter_for: Callable[[str], PlatformAdapter | None],
        lease: timedelta,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.credentials = credentials
        self.adapter_for = adapter_for
        self.lease = lease

    async def post(self, target_id: str) -> None:
        """Post the target's first comment as a reply; failures stay on the target, never unpublish it."""
        async with unit_of_work(self.sessionmaker) as session:
            target = await lock_target(session, target_id)
            if target is None or target.status != "PUBLISHED" or not target.first_comment:
                return
            if target.first_comment_state == "SENDING":
                started = target.first_comment_last_attempt_at
                if started is not None and started > utcnow() - self.lease:
                    return  # another worker is sending it right now
                # A worker died while this comment was being sent: it may exist, so it is not sent again.
                target.first_comment_state = "FAILED"
                target.first_comment_error = (
                    "The comment may or may not have been posted (the worker stopped); check and retry."
                )
                return
            if target.first_comment_state != "PENDING" or not target.external_post_id:
                return
            account = await session.get(SocialAccount, target.social_account_id)
            adapter = self.adapter_for(target.platform)
            if account is None or account.credentials_encrypted is None or adapter is None:
                target.first_comment_state = "FAILED"
                target.first_comment_error = (
                    "The account is no longer connected."
                    if adapter
                    else f"Comments on {target.platform} are not supported yet."
                )
                return
            outbound = OutboundPost(
                target_id=target_id,
                text=target.first_comment,
                account_handle=account.handle,
                account_external_id=account.external_id,
                reply_to_external_id=target.external_post_id,
            )
            target.first_comment_material = target.first_comment_material or adapter.prepare(outbound)
            outbound = replace(outbound, idempotency_key=target.first_comment_material)
            target.first_comment_state = "SENDING"
            target.first_comment_attempt += 1
            target.first_comment_last_attempt_at = utcnow()
        error: str | None = None
        result: PublishResult | None = None
        try:
            creds = await self.credentials.get(account)
            try:
                result = await adapter.reply(creds, outbound)
            except ReauthRequired:
                result = await adapter.reply(await self.credentials.get(account, force=True), outbound)
        except OutcomeUnknown:
            error = "The comment may or may not have been posted (no answer from the platform); check and retry."
        except (RetryableError, PermanentError, ReauthRequired) as exc:
            error = exc.message
        except Exception as exc:  # an adapter bug must not lose the published state
            log.exception("publishing.first_comment_crashed", target_id=target_id)
            error = f"Unexpected error ({type(exc).__name__})."
        async with unit_of_work(self.sessionmaker) as session:
            await session.execute(
                update(PostTarget)
                .where(PostTarget.id == target_id, PostTarget.first_comment_state == "SENDING")
                .values(
                    first_comment_state="DONE" if result else "FAILED",
                    first_comment_error=error,
                    first_comment_external_id=result.external_post_id if result else None,
                )
            )
