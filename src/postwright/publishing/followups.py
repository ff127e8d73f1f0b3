"""Follow-ups of a PUBLISHED target: its thread parts, in order, then its first comment; never twice.

Each thread part (see threads.py) and the first comment move PENDING → SENDING → DONE | FAILED, and
SENDING is committed before the request leaves. Part n+1 replies to part n, so the parts go one at a
time. A part or comment found SENDING after its sender stopped, or whose answer was lost, may exist: it
is looked up (Bluesky by the rkey chosen before sending, X among the account's recent replies), resent
only under the same rkey, else FAILED for the user to check. A failed part halts the thread; the first
comment (a reply to the root) still goes. Nothing here ever touches the target's PUBLISHED state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import structlog
from sqlalchemy import and_, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwright.db.models import MediaAsset, Post, PostTarget, SocialAccount
from postwright.db.session import unit_of_work
from postwright.kit.clock import utcnow
from postwright.media.service import MediaContext
from postwright.publishing import queue
from postwright.publishing.credentials import CredentialStore
from postwright.publishing.platforms.base import (
    MediaFile,
    OutboundPost,
    OutcomeUnknown,
    PermanentError,
    PlatformAdapter,
    PlatformError,
    PublishResult,
    ReauthRequired,
    RetryableError,
)
from postwright.publishing.retry import RetryPolicy
from postwright.publishing.status import lock_target
from postwright.publishing.threads import parse_thread

log = structlog.get_logger("postwright.publishing")


async def load_media_file(media: MediaContext, asset: MediaAsset, alt_text: str | None) -> MediaFile:
    """One stored asset as the adapters take it: bytes for uploads, a signed URL for pull-by-URL platforms."""
    return MediaFile(
        kind=asset.kind,
        mime_type=asset.mime_type,
        data=await media.storage.get(asset.storage_key),
        url=await media.content_url(asset),
        alt_text=alt_text or asset.alt_text,
        width=asset.width,
        height=asset.height,
        duration_ms=asset.duration_ms,
    )


class Step(Enum):
    SENT = "sent"  # one part was handled; look at the next
    FINISHED = "finished"  # no part left to send now (all done, or halted by a failure)
    WAITING = "waiting"  # someone else is sending, or a retry is due later, or the root is not published


@dataclass
class PartSend:
    """One thread part about to be sent (or looked up), with what is needed to record its outcome."""

    target_id: str
    index: int
    stamp: str  # the part's lastAttemptAt as stored: the outcome is recorded only if it is still ours
    auto_attempts: int  # tries since the last manual retry: what the retry policy bounds
    lookup_only: bool
    may_resend: bool  # a same-key resend after "not found" needs all the part's media
    account: SocialAccount
    adapter: PlatformAdapter
    outbound: OutboundPost
    assets: list[tuple[MediaAsset, str | None]]


class FollowUps:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        credentials: CredentialStore,
        adapter_for: Callable[[str], PlatformAdapter | None],
        lease: timedelta,
        policy: RetryPolicy,
        media: MediaContext,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.credentials = credentials
        self.adapter_for = adapter_for
        self.lease = lease
        self.policy = policy
        self.media = media

    async def run(self, target_id: str, *, from_job: bool = False) -> None:
        """Send what is due of the thread, then the first comment once the thread is done or halted.

        `from_job`: called by the queued backstop rather than right after the root was recorded; when the
        thread is busy elsewhere, a later check is queued, so a sender that dies mid-thread is picked up.
        """
        while (step := await self._thread_step(target_id, from_job=from_job)) is Step.SENT:
            pass
        if step is Step.FINISHED:
            await self._first_comment(target_id)

    # ---- thread parts -------------------------------------------------------------------------------

    async def _thread_step(self, target_id: str, *, from_job: bool) -> Step:
        send = await self._begin_part(target_id, from_job=from_job)
        if not isinstance(send, PartSend):
            return send
        beat = asyncio.create_task(self._heartbeat(send))
        try:
            entry = await self._deliver(send)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        async with unit_of_work(self.sessionmaker) as session:
            target = await lock_target(session, target_id)
            if target is None or not target.thread_state or len(target.thread_state) <= send.index:
                return Step.FINISHED
            state = [dict(e) for e in target.thread_state]
            current = state[send.index]
            ours = current.get("state") == "SENDING" and current.get("lastAttemptAt") == send.stamp
            if not ours:
                # Taken over meanwhile (our heartbeat fell behind). A confirmed post is still the truth, and
                # dropping it could make the part look absent and invite a manual re-send.
                if entry["state"] != "DONE" or current.get("state") == "DONE":
                    return Step.WAITING
                log.warning("publishing.thread_part_recorded_after_takeover", target_id=target_id, part=send.index + 1)
            current.update(entry)
            target.thread_state = state
            if entry["state"] == "PENDING":
                await queue.enqueue_follow_ups(session, target_id=target_id, due_at=_instant(entry["notBefore"]))
                return Step.WAITING
        return Step.SENT if entry["state"] == "DONE" else Step.FINISHED

    async def _begin_part(self, target_id: str, *, from_job: bool) -> PartSend | Step:
        """Under the target's lock: pick the next part and record SENDING before anything leaves."""
        now = utcnow()
        async with unit_of_work(self.sessionmaker) as session:
            target = await lock_target(session, target_id)
            if target is None or target.status != "PUBLISHED" or not target.external_post_id:
                return Step.WAITING
            parts, _ = parse_thread(target.platform, target.platform_options)
            if not parts or not target.thread_state:
                return Step.FINISHED
            state = [dict(e) for e in target.thread_state]
            index = next((i for i, e in enumerate(state) if e.get("state") != "DONE"), None)
            if index is None or index >= len(parts) or state[index].get("state") == "FAILED":
                return Step.FINISHED
            entry = state[index]
            started = _instant(entry.get("lastAttemptAt"))
            alive = _instant(entry.get("aliveAt")) or started
            lookup_only = entry.get("state") == "SENDING"
            if lookup_only and alive is not None and alive > now - self.lease:
                if from_job:  # check again once that sender's lease would have run out
                    await queue.enqueue_follow_ups(session, target_id=target_id, due_at=alive + self.lease)
                return Step.WAITING
            not_before = _instant(entry.get("notBefore"))
            if not lookup_only and not_before is not None and not_before > now:
                if from_job:
                    await queue.enqueue_follow_ups(session, target_id=target_id, due_at=not_before)
                return Step.WAITING
            account = await session.get(SocialAccount, target.social_account_id)
            adapter = self.adapter_for(target.platform)
            if account is None or account.credentials_encrypted is None or adapter is None:
                reason = "the account is no longer connected" if adapter else f"{target.platform} has no adapter"
                # A part found SENDING may exist already: say so, or a retry after reconnecting posts it twice.
                error = f"It may or may not have been posted; {reason}." if lookup_only else f"{reason.capitalize()}."
                entry.update(state="FAILED", error=error)
                target.thread_state = state
                return Step.FINISHED
            post = await session.get(Post, target.post_id)
            alt_texts = (post.media_alt_text if post else None) or {}
            found = {
                a.id: a
                for a in await session.scalars(
                    select(MediaAsset).where(
                        MediaAsset.id.in_(parts[index].media_ids),
                        MediaAsset.status == "READY",
                        MediaAsset.deleted_at.is_(None),
                    )
                )
            }
            missing = [m for m in parts[index].media_ids if m not in found]
            if missing and not lookup_only:
                entry.update(state="FAILED", error=f"Media {', '.join(missing)} is no longer available.")
                target.thread_state = state
                return Step.FINISHED
            parent = state[index - 1].get("externalPostId") if index else target.external_post_id
            options = {k: v for k, v in (target.platform_options or {}).items() if k != "thread"}
            outbound = OutboundPost(
                target_id=target_id,
                text=parts[index].text,
                account_handle=account.handle,
                account_external_id=account.external_id,
                platform_options=options,
                reply_to_external_id=parent,
                # The window a lookup searches starts at the last real send, not at a takeover.
                sent_after=(_instant(entry.get("sentAt")) or started) if lookup_only else now,
            )
            entry["material"] = entry.get("material") or adapter.prepare(outbound)
            stamp = now.isoformat()
            entry.update(state="SENDING", lastAttemptAt=stamp, aliveAt=stamp, error=None)
            if not lookup_only:
                entry.update(attempts=int(entry.get("attempts", 0)) + 1, auto=int(entry.get("auto", 0)) + 1)
                entry["sentAt"] = stamp
                entry.pop("notBefore", None)
            target.thread_state = state
            return PartSend(
                target_id=target_id,
                index=index,
                stamp=stamp,
                auto_attempts=int(entry.get("auto", 0)),
                lookup_only=lookup_only,
                account=account,
                adapter=adapter,
                may_resend=not missing,
                outbound=replace(outbound, idempotency_key=entry["material"]),
                assets=[(found[m], alt_texts.get(m)) for m in parts[index].media_ids if m in found],
            )

    async def _heartbeat(self, send: PartSend) -> None:
        """Keep a slow send (media uploads, processing) from looking stranded to other workers."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                async with unit_of_work(self.sessionmaker) as session:
                    target = await lock_target(session, send.target_id)
                    state = [dict(e) for e in (target.thread_state or [])] if target else []
                    if len(state) > send.index and state[send.index].get("lastAttemptAt") == send.stamp:
                        state[send.index]["aliveAt"] = utcnow().isoformat()
                        target.thread_state = state  # type: ignore[union-attr]
            except Exception:
                log.exception("publishing.thread_heartbeat_failed", target_id=send.target_id)

    async def _deliver(self, send: PartSend) -> dict[str, Any]:
        """Send (or, after a stopped sender, look up) one part; the part's new state fields."""
        adapter, outbound = send.adapter, send.outbound
        # Media is needed for a send, and for a lookup only when it may end in a same-key resend.
        needs_media = not send.lookup_only or (send.may_resend and bool(outbound.idempotency_key))
        try:
            creds = await self.credentials.get(send.account)
            try:
                media = [await load_media_file(self.media, *asset) for asset in send.assets] if needs_media else []
            except Exception as exc:
                log.exception("publishing.thread_media_unreadable", target_id=send.target_id)
                raise RetryableError(f"Could not read the part's media ({type(exc).__name__}).") from exc
        except PlatformError as exc:  # nothing was sent for this part yet
            if send.lookup_only:
                return {"state": "FAILED", "error": f"It may or may not have been posted ({exc.message})."}
            return self._retry_or_fail(send, exc)
        outbound = replace(outbound, media=tuple(media))
        try:
            if send.lookup_only:
                detail = "The worker stopped after sending this part."
                return await self._look_up(adapter, send.account, outbound, detail, may_resend=send.may_resend)
            return _done(
                await self.credentials.call_with_refresh(send.account, creds, lambda c: adapter.publish(c, outbound))
            )
        except (RetryableError, PermanentError, ReauthRequired) as exc:
            return self._retry_or_fail(send, exc)
        except OutcomeUnknown as exc:
            return await self._look_up(adapter, send.account, outbound, exc.message)
        except Exception as exc:  # an adapter bug after the request may have left: never re-send blindly
            log.exception("publishing.thread_part_crashed", target_id=send.target_id, part=send.index + 1)
            return await self._look_up(adapter, send.account, outbound, f"Unexpected error ({type(exc).__name__}).")

    async def _look_up(
        self,
        adapter: PlatformAdapter,
        account: SocialAccount,
        outbound: OutboundPost,
        detail: str,
        *,
        may_resend: bool = True,
    ) -> dict[str, Any]:
        try:
            # The account's current pair: a refresh during the send left the new one on the account.
            creds = await self.credentials.get(account)
            found = await adapter.lookup(creds, outbound)
            if found is not None:
                return _done(found)
            if outbound.idempotency_key and may_resend:
                # The platform dedupes on the key stored before the first send (Bluesky rkey): one resend is safe.
                return _done(await adapter.publish(creds, outbound))
        except PlatformError as exc:
            return {"state": "FAILED", "error": f"{detail} It may or may not have been posted ({exc.message})."}
        except Exception as exc:
            log.exception("publishing.follow_up_lookup_crashed", target_id=outbound.target_id)
            return {"state": "FAILED", "error": f"{detail} The lookup failed ({type(exc).__name__})."}
        return {"state": "FAILED", "error": f"{detail} It was not found, but it may still appear; check and retry."}

    def _retry_or_fail(self, send: PartSend, exc: PlatformError) -> dict[str, Any]:
        """Errors that prove nothing was posted: retried later with backoff while attempts remain."""
        if isinstance(exc, RetryableError):
            delay = self.policy.next_delay(send.auto_attempts, retry_after=exc.retry_after)
            if delay is not None:
                return {"state": "PENDING", "error": exc.message, "notBefore": (utcnow() + delay).isoformat()}
        return {"state": "FAILED", "error": exc.message}

    # ---- first comment ------------------------------------------------------------------------------

    async def _first_comment(self, target_id: str) -> None:
        """Post the target's first comment as a reply to the root; failures stay on the target.

        A comment found SENDING after its sender stopped, or whose answer was lost, is looked up like a
        thread part; it is resent only under the record key stored before its first send (Bluesky).
        """
        now = utcnow()
        async with unit_of_work(self.sessionmaker) as session:
            target = await lock_target(session, target_id)
            if target is None or target.status != "PUBLISHED" or not target.first_comment:
                return
            if target.first_comment_state not in ("PENDING", "SENDING") or not target.external_post_id:
                return
            previous = target.first_comment_last_attempt_at
            lookup_only = target.first_comment_state == "SENDING"
            if lookup_only and previous is not None and previous > now - self.lease:
                return  # another worker is sending it right now
            account = await session.get(SocialAccount, target.social_account_id)
            adapter = self.adapter_for(target.platform)
            if account is None or account.credentials_encrypted is None or adapter is None:
                reason = (
                    "the account is no longer connected"
                    if adapter
                    else f"comments on {target.platform} are not supported yet"
                )
                target.first_comment_state = "FAILED"
                target.first_comment_error = (
                    f"The comment may or may not have been posted; {reason}."
                    if lookup_only
                    else f"{reason.capitalize()}."
                )
                return
            outbound = OutboundPost(
                target_id=target_id,
                text=target.first_comment,
                account_handle=account.handle,
                account_external_id=account.external_id,
                reply_to_external_id=target.external_post_id,
                sent_after=previous if lookup_only else now,
            )
            target.first_comment_material = target.first_comment_material or adapter.prepare(outbound)
            outbound = replace(outbound, idempotency_key=target.first_comment_material)
            target.first_comment_state = "SENDING"
            if not lookup_only:
                target.first_comment_attempt += 1
            # Also claims a stranded comment for this lookup, so two sweeps never look it up at once.
            target.first_comment_last_attempt_at = now
        outcome = await self._deliver_comment(adapter, account, outbound, lookup_only=lookup_only)
        done = outcome["state"] == "DONE"
        async with unit_of_work(self.sessionmaker) as session:
            mine = and_(PostTarget.first_comment_state == "SENDING", PostTarget.first_comment_last_attempt_at == now)
            # A confirmed comment is recorded even if someone took over meanwhile and found nothing yet (as for
            # thread parts): a FAILED "not found" would invite a manual re-send.
            confirmed = and_(literal(done), PostTarget.first_comment_state != "DONE")
            await session.execute(
                update(PostTarget)
                .where(PostTarget.id == target_id, or_(mine, confirmed))
                .values(
                    first_comment_state=outcome["state"],
                    first_comment_error=outcome.get("error"),
                    first_comment_external_id=outcome.get("externalPostId"),
                )
            )

    async def _deliver_comment(
        self, adapter: PlatformAdapter, account: SocialAccount, outbound: OutboundPost, *, lookup_only: bool
    ) -> dict[str, Any]:
        try:
            creds = await self.credentials.get(account)
        except PlatformError as exc:
            prefix = "The comment may or may not have been posted; " if lookup_only else ""
            return {"state": "FAILED", "error": f"{prefix}{exc.message}"}
        if lookup_only:
            return await self._look_up(adapter, account, outbound, "The worker stopped after sending the comment.")
        try:
            return _done(await self.credentials.call_with_refresh(account, creds, lambda c: adapter.reply(c, outbound)))
        except (RetryableError, PermanentError, ReauthRequired) as exc:
            return {"state": "FAILED", "error": exc.message}
        except OutcomeUnknown as exc:
            return await self._look_up(adapter, account, outbound, exc.message)
        except Exception as exc:  # an adapter bug after the request may have left: look, never re-send blindly
            log.exception("publishing.first_comment_crashed", target_id=outbound.target_id)
            return await self._look_up(adapter, account, outbound, f"Unexpected error ({type(exc).__name__}).")


def _done(result: PublishResult) -> dict[str, Any]:
    return {"state": "DONE", "externalPostId": result.external_post_id, "externalUrl": result.external_url}


def _instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
