"""Rules of the posts API: states, scheduling, approval, cancel, delete (api.md, seeds 000-004)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from postwright.audit.service import audit_service
from postwright.db.models import (
    Post,
    PostMedia,
    PostTarget,
    PublishAttempt,
    Workspace,
)
from postwright.errors import Conflict, InvalidState, NotFound, RateLimited, ValidationFailed
from postwright.kit.clock import utcnow
from postwright.kit.ids import new_id
from postwright.kit.pagination import Page, PageRequest, paginate
from postwright.posts.repository import PostsRepository
from postwright.posts.schemas import MediaItemIn, PostInput
from postwright.posts.status import DELETABLE, EDITABLE, PostStatus, TargetStatus
from postwright.posts.timing import due_time, parse_instant, parse_timezone
from postwright.publishing import queue
from postwright.publishing.rules import content_of, facts_of, validate_content
from postwright.publishing.status import apply_derived_status, lock_target
from postwright.publishing.threads import parse_thread, thread_media_ids
from postwright.workspaces.auth import Principal, Role, Scope

# mediaItems[] ingest (URL → MediaAsset); the media domain installs it.
MediaIngest = Callable[[AsyncSession, Principal, list[MediaItemIn]], Awaitable[list[str]]]
# Deleting media after commit; the media domain installs it.
MediaDeleter = Callable[[AsyncSession, Principal, list[str]], Awaitable[None]]

UNSENT = (TargetStatus.DRAFT.value, TargetStatus.SCHEDULED.value)


def refresh_status(post: Post) -> None:
    """Recompute the aggregate status from the loaded targets (call after every target change)."""
    apply_derived_status(post, post.targets)


class PostsService:
    media_ingest: MediaIngest | None = None
    media_deleter: MediaDeleter | None = None

    # ---- reading -------------------------------------------------------------------------------

    async def get(self, session: AsyncSession, principal: Principal, post_id: str, *, for_update: bool = False) -> Post:
        post = await PostsRepository(session).get(principal.workspace_id, post_id, for_update=for_update)
        if post is None:
            raise NotFound(f"Post {post_id} not found.")
        return post

    async def read(self, session: AsyncSession, principal: Principal, post_id: str) -> Any:
        """The post as plain rows for rendering (no ORM instances; nothing may be changed on it)."""
        post = await PostsRepository(session).read(principal.workspace_id, post_id)
        if post is None:
            raise NotFound(f"Post {post_id} not found.")
        return post

    async def list(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        page: PageRequest,
        status: str | None,
        platform: str | None,
        social_account_id: str | None,
        scheduled_from: str | None,
        scheduled_to: str | None,
        text: str | None,
    ) -> Page[Post]:
        query = PostsRepository(session).list_query(
            principal.workspace_id,
            status=status,
            platform=platform,
            social_account_id=social_account_id,
            scheduled_from=parse_instant(scheduled_from, timezone=None, field="from") if scheduled_from else None,
            scheduled_to=parse_instant(scheduled_to, timezone=None, field="to") if scheduled_to else None,
            text=text,
        )
        return await paginate(session, query, Post.id, page)

    async def attempts(self, session: AsyncSession, principal: Principal, post_id: str) -> list[PublishAttempt]:
        post = await self.get(session, principal, post_id)
        return await PostsRepository(session).attempts(post.id)

    # ---- writing -------------------------------------------------------------------------------

    async def create(self, session: AsyncSession, principal: Principal, data: PostInput) -> Post:
        """Create a draft, or a scheduled post when scheduledFor is given."""
        self._require_editor(principal, "create posts")
        if data.scheduled_for:
            principal.require_scopes(Scope.PUBLISH_WRITE)
        parse_timezone(data.timezone)
        due = due_time(data.scheduled_for, timezone=data.timezone) if data.scheduled_for else None
        pin = self._pin(data) if due is None else None
        post = Post(
            id=new_id("post"),
            workspace_id=principal.workspace_id,
            created_by_user_id=principal.user_id,
            status=PostStatus.DRAFT.value,
            caption=data.caption,
            scheduled_at=due or pin,
            timezone=data.timezone,
            created_via_api=principal.via_api,
            created_via_flat_shape=data.flat_shape,
            generation=1,
            targets=[],
            media=[],
        )
        session.add(post)
        await self._compose(session, principal, post, data, due, action="post.create")
        return post

    async def update(self, session: AsyncSession, principal: Principal, post_id: str, data: PostInput) -> Post:
        """Replace content, accounts and media wholesale; a pending publish is superseded."""
        self._require_editor(principal, "edit posts")
        if data.scheduled_for:
            principal.require_scopes(Scope.PUBLISH_WRITE)
        if data.media_items:
            # Fetch URLs before taking the post's row lock: the worker and other edits must not wait on
            # someone else's slow CDN.
            if (await self.get(session, principal, post_id)).status not in EDITABLE:
                raise InvalidState("This post cannot be edited in its current state.")
            data = await self._ingest(session, principal, data)
        post = await self.get(session, principal, post_id, for_update=True)
        if post.status not in EDITABLE:
            raise InvalidState(f"A {post.status} post cannot be edited.")
        parse_timezone(data.timezone)
        due = due_time(data.scheduled_for, timezone=data.timezone) if data.scheduled_for else None
        # Target rows are rebuilt; publish_attempts keeps the history (it has no FK to targets).
        post.targets.clear()
        post.media.clear()
        await session.flush()
        post.caption = data.caption
        post.timezone = data.timezone
        post.created_via_flat_shape = data.flat_shape
        post.scheduled_at = due or self._pin(data)
        self._supersede(post)
        post.canceled_at = post.cancel_reason = None
        post.awaiting_approval = False
        post.approved_by_user_id = post.approved_at = None
        await self._compose(session, principal, post, data, due, action="post.update")
        return post

    async def cancel(self, session: AsyncSession, principal: Principal, post_id: str, reason: str | None) -> Post:
        self._require_editor(principal, "cancel posts")
        post = await self.get(session, principal, post_id, for_update=True)
        await self._cancel_targets(session, post)
        post.cancel_reason = reason
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action="post.cancel",
            subject_type="post",
            subject_id=post.id,
            principal=principal,
            data={"reason": reason},
        )
        return post

    async def delete(self, session: AsyncSession, principal: Principal, post_id: str, *, delete_media: bool) -> None:
        """Cancel and soft-delete in one transaction; optionally delete media no other post uses."""
        self._require_editor(principal, "delete posts")
        post = await self.get(session, principal, post_id, for_update=True)
        if post.status not in DELETABLE:
            raise Conflict(f"A {post.status} post cannot be deleted.")
        if post.status in (PostStatus.SCHEDULED, PostStatus.NEEDS_APPROVAL):
            await self._cancel_targets(session, post)
        self._supersede(post)
        post.deleted_at = utcnow()
        media_ids = list(
            dict.fromkeys(
                [m.media_asset_id for m in post.media]
                + [m for t in post.targets for m in (t.media_ids or []) + thread_media_ids(t.platform_options)]
            )
        )
        removed: list[str] = []
        if delete_media and media_ids:
            in_use = await PostsRepository(session).media_used_elsewhere(media_ids, post.id)
            removed = [m for m in media_ids if m not in in_use]
            if removed and self.media_deleter is not None:
                await self.media_deleter(session, principal, removed)
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action="post.delete",
            subject_type="post",
            subject_id=post.id,
            principal=principal,
            data={"deletedMedia": removed},
        )

    async def publish_now(self, session: AsyncSession, principal: Principal, post_id: str, lead_seconds: int) -> Post:
        """Due at now + lead time (the window in which cancel still works)."""
        self._require_editor(principal, "publish posts")
        post = await self.get(session, principal, post_id, for_update=True)
        due = utcnow() + timedelta(seconds=lead_seconds)
        if post.status == PostStatus.FAILED:
            await self._retry_targets(session, principal, post, [t for t in post.targets if t.status == "FAILED"], due)
        elif post.status in (PostStatus.DRAFT, PostStatus.SCHEDULED):
            self._supersede(post)
            post.scheduled_at = due
            await self._schedule(session, principal, post, due)
        else:
            raise Conflict(f"A {post.status} post cannot be published now; only DRAFT, SCHEDULED or FAILED posts can.")
        refresh_status(post)
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action="post.publish",
            subject_type="post",
            subject_id=post.id,
            principal=principal,
            data={"leadSeconds": lead_seconds, "dueAt": due.isoformat()},
        )
        return post

    async def reschedule(
        self,
        session: AsyncSession,
        principal: Principal,
        post_id: str,
        scheduled_for: str,
        timezone: str | None,
    ) -> Post:
        self._require_editor(principal, "reschedule posts")
        post = await self.get(session, principal, post_id, for_update=True)
        if post.status not in (PostStatus.SCHEDULED, PostStatus.NEEDS_APPROVAL):
            raise Conflict(f"Only SCHEDULED posts can be rescheduled; this one is {post.status}.")
        due = due_time(scheduled_for, timezone=timezone or post.timezone)
        previous = post.scheduled_at
        self._supersede(post)
        post.scheduled_at = due
        if post.status == PostStatus.NEEDS_APPROVAL:
            for target in post.targets:
                target.scheduled_for = due
        else:
            await self._enqueue(session, post, post.targets, due)
        refresh_status(post)
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action="post.reschedule",
            subject_type="post",
            subject_id=post.id,
            principal=principal,
            data={"from": previous.isoformat() if previous else None, "to": due.isoformat()},
        )
        return post

    async def approve(self, session: AsyncSession, principal: Principal, post_id: str) -> Post:
        principal.require_role(Role.ADMIN, "approve posts")
        post = await self.get(session, principal, post_id, for_update=True)
        if post.status != PostStatus.NEEDS_APPROVAL:
            raise Conflict(f"Only posts awaiting approval can be approved; this one is {post.status}.")
        due = max(post.scheduled_at or utcnow(), utcnow())
        post.awaiting_approval = False
        post.approved_by_user_id = principal.user_id
        post.approved_at = utcnow()
        await self._schedule(session, principal, post, due, approval_checked=True)
        refresh_status(post)
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action="post.approve",
            subject_type="post",
            subject_id=post.id,
            principal=principal,
        )
        return post

    async def reject(self, session: AsyncSession, principal: Principal, post_id: str, reason: str | None) -> Post:
        principal.require_role(Role.ADMIN, "reject posts")
        post = await self.get(session, principal, post_id, for_update=True)
        if post.status != PostStatus.NEEDS_APPROVAL:
            raise Conflict(f"Only posts awaiting approval can be rejected; this one is {post.status}.")
        post.awaiting_approval = False
        post.rejection_reason = reason
        self._supersede(post)
        for target in post.targets:
            target.status = TargetStatus.DRAFT.value
            target.scheduled_for = None
        refresh_status(post)
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action="post.reject",
            subject_type="post",
            subject_id=post.id,
            principal=principal,
            data={"reason": reason},
        )
        return post

    async def retry_target(self, session: AsyncSession, principal: Principal, post_id: str, target_id: str) -> Post:
        self._require_editor(principal, "retry targets")
        post = await self.get(session, principal, post_id, for_update=True)
        target = self._target(post, target_id)
        if target.status != TargetStatus.FAILED:
            raise Conflict(f"Only FAILED targets can be retried; this one is {target.status}.")
        await self._retry_targets(session, principal, post, [target], utcnow())
        refresh_status(post)
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action="target.retry",
            subject_type="target",
            subject_id=target.id,
            principal=principal,
            data={"postId": post.id},
        )
        return post

    async def retry_first_comment(
        self,
        session: AsyncSession,
        principal: Principal,
        post_id: str,
        target_id: str,
        *,
        cooldown_seconds: int,
    ) -> Post:
        post, target = await self._follow_up_target(session, principal, post_id, target_id)
        if not target.first_comment or target.first_comment_state != "FAILED":
            raise Conflict("Only a failed first comment of a PUBLISHED target can be retried.")
        _cool_down(
            target.first_comment_last_attempt_at,
            cooldown_seconds,
            f"The first comment was tried {target.first_comment_attempt} time(s)",
        )
        target.first_comment_error = None
        target.first_comment_state = "PENDING"
        return await self._resume_follow_ups(session, principal, post, target, "target.first_comment_retry")

    async def retry_thread(
        self,
        session: AsyncSession,
        principal: Principal,
        post_id: str,
        target_id: str,
        *,
        cooldown_seconds: int,
    ) -> Post:
        """Resume a halted thread from its failed part (the parts already posted are not sent again)."""
        post, target = await self._follow_up_target(session, principal, post_id, target_id)
        state = [dict(entry) for entry in target.thread_state or []]
        failed = next((i for i, entry in enumerate(state) if entry.get("state") == "FAILED"), None)
        if failed is None:
            raise Conflict("Only a failed thread part of a PUBLISHED target can be retried.")
        entry = state[failed]
        last = datetime.fromisoformat(entry["lastAttemptAt"]) if entry.get("lastAttemptAt") else None
        _cool_down(last, cooldown_seconds, f"Thread part {failed + 1} was tried {entry.get('attempts', 0)} time(s)")
        entry.update(state="PENDING", error=None, auto=0)
        entry.pop("notBefore", None)
        target.thread_state = state
        return await self._resume_follow_ups(session, principal, post, target, "target.thread_retry", part=failed + 1)

    # ---- internals -----------------------------------------------------------------------------

    async def _compose(
        self,
        session: AsyncSession,
        principal: Principal,
        post: Post,
        data: PostInput,
        due: datetime | None,
        *,
        action: str,
    ) -> None:
        """Attach targets and media, schedule when a time is given, and record the change."""
        await self._fill(session, principal, post, data)
        if due is not None:
            await self._schedule(session, principal, post, due)
        refresh_status(post)
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action=action,
            subject_type="post",
            subject_id=post.id,
            principal=principal,
            data={"targets": len(post.targets)},
        )

    async def _follow_up_target(
        self, session: AsyncSession, principal: Principal, post_id: str, target_id: str
    ) -> tuple[Post, PostTarget]:
        """The locked post and its PUBLISHED target whose follow-ups (thread, first comment) a user retries."""
        self._require_editor(principal, "retry follow-ups")
        post = await self.get(session, principal, post_id, for_update=True)
        # Lock order: the post, then the target (the worker writes follow-up state under the target's lock).
        target = await lock_target(session, self._target(post, target_id).id)
        assert target is not None
        if target.status != TargetStatus.PUBLISHED:
            raise Conflict(
                f"Only a PUBLISHED target's thread or first comment can be retried; this one is {target.status}."
            )
        return post, target

    async def _resume_follow_ups(
        self, session: AsyncSession, principal: Principal, post: Post, target: PostTarget, action: str, **data: Any
    ) -> Post:
        await queue.enqueue_follow_ups(session, target_id=target.id, due_at=utcnow())
        audit_service.record(
            session,
            workspace_id=post.workspace_id,
            action=action,
            subject_type="target",
            subject_id=target.id,
            principal=principal,
            data={"postId": post.id, **data},
        )
        return post

    def _require_editor(self, principal: Principal, action: str) -> None:
        principal.require_role(Role.EDITOR, action)

    def _target(self, post: Post, target_id: str) -> PostTarget:
        for target in post.targets:
            if target.id == target_id:
                return target
        raise NotFound(f"Target {target_id} not found on post {post.id}.")

    def _pin(self, data: PostInput) -> datetime | None:
        if not data.draft_scheduled_for:
            return None
        return parse_instant(data.draft_scheduled_for, timezone=data.timezone, field="draftScheduledFor")

    def _supersede(self, post: Post) -> None:
        """Make every job queued so far a no-op (it carries the old generation)."""
        post.generation += 1
        post.workflow_id = None

    async def _ingest(self, session: AsyncSession, principal: Principal, data: PostInput) -> PostInput:
        """Fetch `mediaItems` into the library; their ids go first in `mediaIds`, as seed 003 says."""
        if not data.media_items:
            return data
        if self.media_ingest is None:
            raise ValidationFailed("mediaItems are not supported by this server; upload media first.")
        ingested = await self.media_ingest(session, principal, data.media_items)
        return dataclasses.replace(data, media_items=[], media_ids=list(dict.fromkeys(ingested + data.media_ids)))

    async def _fill(self, session: AsyncSession, principal: Principal, post: Post, data: PostInput) -> None:
        """Validate accounts and media, then attach targets and media rows to the post."""
        repository = PostsRepository(session)
        ids = [t.social_account_id for t in data.targets]
        accounts = await repository.accounts(principal.workspace_id, ids)
        problems = []
        seen: set[str] = set()
        for target in data.targets:
            account = accounts.get(target.social_account_id)
            path = target.field_path + (".accountId" if data.flat_shape else ".socialAccountId")
            if target.social_account_id in seen:
                problems.append({"field": path, "message": "this account is listed twice"})
            seen.add(target.social_account_id)
            if account is None:
                problems.append(
                    {
                        "field": path,
                        "message": f"no social account {target.social_account_id} in this workspace",
                    }
                )
            elif account.status != "ACTIVE":
                problems.append({"field": path, "message": f"social account is {account.status}; reconnect it first"})
            elif target.platform_options is not None:
                _, thread_problems = parse_thread(account.platform, target.platform_options)
                path = f"{target.field_path}.platformOptions.thread"
                problems += [{"field": path, "message": message} for message in thread_problems]
        # Each media id with the field that names it first, so a problem points at where it was given.
        fields = {m: "mediaIds" for m in data.media_ids}
        thread_media: set[str] = set()
        for target in data.targets:
            for m in target.media_ids:
                fields.setdefault(m, f"{target.field_path}.mediaIds")
            for m in thread_media_ids(target.platform_options):
                thread_media.add(m)
                fields.setdefault(m, f"{target.field_path}.platformOptions.thread")
        media = await repository.media(principal.workspace_id, list(fields))
        for media_id, field in fields.items():
            asset = media.get(media_id)
            if asset is None:
                problems.append({"field": field, "message": f"no media {media_id} in this workspace"})
            elif asset.status != "READY":
                problems.append({"field": field, "message": f"media {media_id} is {asset.status}, not READY"})
        for media_id in data.media_alt_text:
            if media_id not in data.media_ids and media_id not in thread_media:
                message = "not one of the post's or thread's mediaIds"
                problems.append({"field": f"mediaAltText.{media_id}", "message": message})
        if problems:
            raise ValidationFailed("The post is not valid: " + problems[0]["message"] + ".", details=problems)

        data = await self._ingest(session, principal, data)
        ordered_media = list(dict.fromkeys(data.media_ids))
        post.media_alt_text = data.media_alt_text or None
        for order, media_id in enumerate(ordered_media):
            post.media.append(
                PostMedia(
                    post_id=post.id,
                    media_asset_id=media_id,
                    order=order,
                    alt_text=data.media_alt_text.get(media_id),
                )
            )
        for position, target in enumerate(data.targets):
            account = accounts[target.social_account_id]
            post.targets.append(
                PostTarget(
                    id=new_id("tgt"),
                    post_id=post.id,
                    workspace_id=post.workspace_id,
                    social_account_id=account.id,
                    platform=account.platform,
                    position=position,
                    status=TargetStatus.DRAFT.value,
                    caption_override=target.caption_override,
                    first_comment=target.first_comment,
                    first_comment_attempt=0,
                    platform_options=target.platform_options,
                    media_ids=target.media_ids,
                    attempt_count=0,
                )
            )

    async def _platform_problems(self, session: AsyncSession, post: Post) -> list[dict[str, str]]:
        all_media = list(
            {m.media_asset_id for m in post.media}
            | {m for t in post.targets for m in (t.media_ids or []) + thread_media_ids(t.platform_options)}
        )
        media = await PostsRepository(session).media(post.workspace_id, all_media)
        facts = {media_id: facts_of(asset) for media_id, asset in media.items()}
        problems = []
        for target in post.targets:
            if target.status not in UNSENT and target.status != TargetStatus.FAILED:
                continue
            content = content_of(
                platform=target.platform,
                text=target.caption_override if target.caption_override is not None else (post.caption or ""),
                first_comment=target.first_comment,
                platform_options=target.platform_options,
                media_ids=target.media_ids or [m.media_asset_id for m in post.media],
                facts=facts,
            )
            for problem in validate_content(content):
                problems.append({"field": f"targets[{target.position}]", "message": problem})
        return problems

    async def _schedule(
        self,
        session: AsyncSession,
        principal: Principal,
        post: Post,
        due: datetime,
        *,
        approval_checked: bool = False,
    ) -> None:
        """Schedule every unsent target at `due`, or park the post for approval."""
        principal.require_scopes(Scope.PUBLISH_WRITE)
        problems = await self._platform_problems(session, post)
        if problems:
            raise ValidationFailed("The post breaks platform rules: " + problems[0]["message"], details=problems)
        post.scheduled_at = due
        # Only editors' posts can need approval: owners and admins skip the workspace lookup.
        needs_check = not approval_checked and principal.role == Role.EDITOR
        workspace = await session.get(Workspace, post.workspace_id) if needs_check else None
        if workspace is not None and workspace.require_approval:
            post.awaiting_approval = True
            for target in post.targets:
                if target.status in UNSENT:
                    # Back to DRAFT: nothing may claim them until an admin approves.
                    target.status = TargetStatus.DRAFT.value
                    target.scheduled_for = due
            return
        await self._enqueue(session, post, [t for t in post.targets if t.status in UNSENT], due)

    async def _enqueue(self, session: AsyncSession, post: Post, targets: list[PostTarget], due: datetime) -> None:
        for target in targets:
            target.status = TargetStatus.SCHEDULED.value
            target.scheduled_for = due
            target.next_attempt_at = None
            target.auto_attempts = 0
        job_id = await queue.enqueue_dispatch(session, post_id=post.id, generation=post.generation, due_at=due)
        post.workflow_id = queue.workflow_id_for(job_id)
        post.pending_workflow_id = None
        for target in targets:
            target.job_id = job_id

    async def _retry_targets(
        self,
        session: AsyncSession,
        principal: Principal,
        post: Post,
        targets: list[PostTarget],
        due: datetime,
    ) -> None:
        principal.require_scopes(Scope.PUBLISH_WRITE)
        accounts = await PostsRepository(session).accounts(post.workspace_id, [t.social_account_id for t in targets])
        for target in targets:
            account = accounts.get(target.social_account_id)
            if account is None or account.status != "ACTIVE":
                raise Conflict(f"The account of target {target.id} is not connected; reconnect it before retrying.")
            target.error_code = target.error_message = None
            target.sent_at = None
            target.lease_owner = target.lease_expires_at = None
        post.canceled_at = None
        await self._enqueue(session, post, targets, due)

    async def _cancel_targets(self, session: AsyncSession, post: Post) -> None:
        """Cancel what has not been sent; refuse when any request already left."""
        if post.status not in (PostStatus.SCHEDULED, PostStatus.NEEDS_APPROVAL, PostStatus.PUBLISHING):
            raise Conflict(f"A {post.status} post cannot be canceled.")
        targets = await PostsRepository(session).lock_targets(post.id)
        if any(t.status == TargetStatus.PUBLISHED or t.sent_at is not None for t in targets):
            raise Conflict("Publishing already reached the platform for at least one target; the post will complete.")
        for target in targets:
            if target.status in (*UNSENT, TargetStatus.PUBLISHING.value):
                target.status = TargetStatus.CANCELED.value
                target.lease_owner = target.lease_expires_at = None
        self._supersede(post)
        post.canceled_at = utcnow()
        post.awaiting_approval = False
        refresh_status(post)


posts_service = PostsService()


def _cool_down(last_attempt: datetime | None, cooldown_seconds: int, tried: str) -> None:
    """429 with Retry-After while a manual retry comes too soon after the last attempt."""
    if last_attempt is None:
        return
    wait = last_attempt + timedelta(seconds=cooldown_seconds) - utcnow()
    if wait > timedelta(0):
        seconds = int(wait.total_seconds()) + 1
        raise RateLimited(f"{tried}; retry in {seconds} s.", retry_after_seconds=seconds)
