"""The publishing engine: from a due target to PUBLISHED or FAILED, exactly once.

Per post: (1) one transaction locks the post, claims its due targets (SCHEDULED → PUBLISHING with a
lease) and opens a PublishAttempt per target; (2) one transaction records, before any request leaves,
that the requests are about to leave (`sent_at`, plus the idempotency material the platform honours);
(3) the adapters run concurrently; (4) one transaction records every outcome. A worker that dies
anywhere leaves a lease that expires; `reconcile()` then re-queues what provably never left and looks up
what may have left — it never re-sends blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog
from sqlalchemy import ARRAY, DateTime, String, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwright.config import Settings
from postwright.db.models import MediaAsset, Post, PostMedia, PostTarget, PublishAttempt, SocialAccount
from postwright.db.session import unit_of_work
from postwright.kit.clock import utcnow
from postwright.kit.crypto import TokenCipher
from postwright.kit.ids import new_id
from postwright.media.service import MediaContext
from postwright.publishing import queue
from postwright.publishing.claims import claim_targets_of, expired_leases
from postwright.publishing.credentials import CredentialStore
from postwright.publishing.followups import FollowUps, load_media_file
from postwright.publishing.metrics import PUBLISH_LAG
from postwright.publishing.outcomes import (
    Failed,
    Job,
    Outcome,
    PostRecord,
    Published,
    Retry,
    TargetRecord,
    apply_outcome,
    may_record,
    start_follow_ups,
)
from postwright.publishing.platforms.base import (
    AdapterContext,
    OutboundPost,
    OutcomeUnknown,
    PermanentError,
    PlatformAdapter,
    PlatformError,
    ReauthRequired,
    RetryableError,
)
from postwright.publishing.platforms.registry import build_adapter, platform_key_for
from postwright.publishing.retry import RetryPolicy
from postwright.publishing.rules import content_of, facts_of, validate_content
from postwright.publishing.status import (
    ATTEMPTS,
    POSTS,
    TARGETS,
    any_ids,
    lock_post,
    lock_post_ids,
    lock_rows,
    lock_target,
    recompute_post,
    recompute_posts,
    update_by_id,
    write_changes,
)
from postwright.publishing.threads import thread_media_ids

log = structlog.get_logger("postwright.publishing")
SWEEP_PARALLELISM = 4
EARLY_FIRE_TOLERANCE = 5.0
# The sweep is a safety net for targets no job will pick up; during a burst the queue is merely behind,
# and sweeping those posts too would only add lock traffic.
SWEEP_GRACE = timedelta(seconds=30)
# Published targets with a thread part or first comment still to post; the same text as the partial
# index ix_post_targets_follow_ups (migration 0002), so the sweep's query can use it.
FOLLOW_UPS_OPEN = text(
    "post_targets.status = 'PUBLISHED' AND (post_targets.first_comment_state IN ('PENDING', 'SENDING') "
    """OR post_targets.thread_state @> '[{"state": "PENDING"}]' """
    """OR post_targets.thread_state @> '[{"state": "SENDING"}]')"""
)

# One statement whatever the batch size (so one prepared statement): each target with its material.
_MARK_SENT = text(
    """
    UPDATE post_targets AS t
       SET sent_at = :now, idempotency_material = v.material, lease_expires_at = :lease_until, updated_at = :now
      FROM unnest(CAST(:ids AS text[]), CAST(:materials AS text[])) AS v(id, material)
     WHERE t.id = v.id AND t.status = 'PUBLISHING' AND t.lease_owner = :worker AND t.lease_expires_at > :now
    RETURNING t.id
    """
).bindparams(
    bindparam("ids", type_=ARRAY(String)),
    bindparam("materials", type_=ARRAY(String)),
    bindparam("now", type_=DateTime(timezone=True)),
    bindparam("lease_until", type_=DateTime(timezone=True)),
)


class PublishEngine:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        cipher: TokenCipher,
        media: MediaContext,
        http: aiohttp.ClientSession,
        worker_id: str,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.cipher = cipher
        self.media = media
        self.http = http
        self.worker_id = worker_id
        self.lease = timedelta(seconds=settings.publish_lease_seconds)
        self.policy = RetryPolicy(
            settings.publish_max_attempts, settings.retry_base_seconds, settings.retry_max_seconds
        )
        self._adapters: dict[str, PlatformAdapter | None] = {}
        self.credentials = CredentialStore(sessionmaker, cipher, self.adapter_for)
        self.follow_ups = FollowUps(sessionmaker, self.credentials, self.adapter_for, self.lease, self.policy, media)

    def adapter_for(self, platform: str) -> PlatformAdapter | None:
        key = platform_key_for(platform)
        if key not in self._adapters:
            client_id, client_secret = self.settings.platform_client(key)
            ctx = AdapterContext(
                http=self.http,
                base_url=self.settings.platform_base_url(key),
                client_id=client_id,
                client_secret=client_secret,
                timeout_seconds=self.settings.platform_timeout_seconds,
            )
            try:
                self._adapters[key] = build_adapter(key, ctx)
            except KeyError:
                self._adapters[key] = None
        return self._adapters[key]

    # ---- entry points -------------------------------------------------------------------------------

    async def dispatch(self, post_id: str, generation: int | None) -> int:
        """Publish the post's due targets; `generation=None` means "whatever is current" (sweeps)."""
        return await self.dispatch_many([(post_id, generation)])

    async def dispatch_many(self, items: list[tuple[str, int | None]]) -> int:
        """Publish the due targets of several posts with one claim, one send mark and one record transaction."""
        jobs = await self._claim(items)
        claimed_posts = {job.post_id for job in jobs}
        late = [(p, g) for p, g in items if p not in claimed_posts and g is not None]
        runs = [self._run(jobs)] if jobs else []
        runs += [self._claim_when_due(p, g) for p, g in late]
        counts = await asyncio.gather(*runs)
        return len(jobs) + sum(c for c in counts if isinstance(c, int))

    async def _claim_when_due(self, post_id: str, generation: int) -> int:
        # pgqueuer counts the delay from the database clock at enqueue time, which may run a little
        # ahead of ours: a job may fire just before its targets are due. Wait for them, briefly.
        wait = await self._seconds_until_due(post_id, generation)
        if wait is None:
            return 0
        await asyncio.sleep(wait)
        jobs = await self._claim([(post_id, generation)])
        if jobs:
            await self._run(jobs)
        return len(jobs)

    async def _seconds_until_due(self, post_id: str, generation: int) -> float | None:
        async with self.sessionmaker() as session:
            due = await session.scalar(
                select(func.min(PostTarget.scheduled_for))
                .join(Post, Post.id == PostTarget.post_id)
                .where(
                    PostTarget.post_id == post_id,
                    PostTarget.status == "SCHEDULED",
                    Post.generation == generation,
                    PostTarget.next_attempt_at.is_(None),
                )
            )
        if due is None:
            return None
        wait = (due - utcnow()).total_seconds()
        # Due meanwhile (wait <= 0) is the common case: the job fired milliseconds early; claim again now.
        return max(wait, 0.0) + 0.001 if wait <= EARLY_FIRE_TOLERANCE else None

    async def sweep(self, *, limit: int = 100) -> int:
        """Pick up due targets no job has taken (retries after backoff, paused accounts, lost jobs)."""
        now = utcnow()
        async with self.sessionmaker() as session:
            post_ids = list(
                await session.scalars(
                    select(PostTarget.post_id)
                    .join(Post, Post.id == PostTarget.post_id)
                    .join(SocialAccount, SocialAccount.id == PostTarget.social_account_id)
                    .where(
                        PostTarget.status == "SCHEDULED",
                        PostTarget.scheduled_for <= now - SWEEP_GRACE,
                        (PostTarget.next_attempt_at.is_(None)) | (PostTarget.next_attempt_at <= now),
                        (SocialAccount.paused_until.is_(None)) | (SocialAccount.paused_until <= now),
                        Post.deleted_at.is_(None),
                        Post.canceled_at.is_(None),
                    )
                    .distinct()
                    .limit(limit)
                )
            )
        # Bounded: the sweep shares the connection pool with the queue consumers.
        gate = asyncio.Semaphore(SWEEP_PARALLELISM)

        async def bounded(post_id: str) -> int:
            async with gate:
                return await self.dispatch(post_id, None)

        return sum(await asyncio.gather(*(bounded(p) for p in post_ids)))

    async def reconcile(self, *, limit: int = 100) -> int:
        """Targets whose worker died mid-publish: re-queue if never sent, else look the post up."""
        async with self.sessionmaker() as session:
            candidates = [(t.id, t.post_id) for t in await expired_leases(session, now=utcnow(), limit=limit)]
            await session.rollback()
        handled = 0
        for target_id, post_id in candidates:
            job = await self._take_over(target_id, post_id)
            if job is None:
                continue
            handled += 1
            await self._resolve_and_finish([job])
        return handled

    async def sweep_follow_ups(self, *, limit: int = 50) -> int:
        """Resume thread parts and first comments nobody has touched for a lease (their job or worker died)."""
        async with self.sessionmaker() as session:
            target_ids = list(
                await session.scalars(
                    select(PostTarget.id)
                    .where(FOLLOW_UPS_OPEN, PostTarget.updated_at < utcnow() - self.lease)
                    .order_by(PostTarget.updated_at)
                    .limit(limit)
                )
            )
        await self._follow_up_all(target_ids, parallel=SWEEP_PARALLELISM)
        return len(target_ids)

    async def follow_up(self, target_id: str, *, from_job: bool = False) -> None:
        """Post what follows a published target: thread parts, then the first comment (see followups.py)."""
        await self.follow_ups.run(target_id, from_job=from_job)

    # ---- claim ---------------------------------------------------------------------------------------

    async def _claim(self, items: list[tuple[str, int | None]]) -> list[Job]:
        now = utcnow()
        wanted = dict(items)
        async with unit_of_work(self.sessionmaker) as session:
            # Sweeps (no generation) skip posts someone else holds; jobs wait for the lock.
            sweeping = all(g is None for g in wanted.values())
            posts = {
                p.id: p
                for p in await lock_rows(session, POSTS, wanted, skip_locked=sweeping)
                if p.deleted_at is None
                and p.canceled_at is None
                and not p.awaiting_approval
                and wanted[p.id] in (None, p.generation)
            }
            claimed = await claim_targets_of(
                session, post_ids=list(posts), worker_id=self.worker_id, now=now, lease=self.lease
            )
            if not claimed:
                return []
            jobs = await self._jobs(session, posts, claimed, now, open_attempts=True)
            touched = [posts[pid] for pid in {t.post_id for t in claimed}]
            await recompute_posts(session, touched)
            await write_changes(session, POSTS, touched)
        return jobs

    async def _jobs(
        self,
        session: AsyncSession,
        posts: dict[str, PostRecord],
        targets: list[TargetRecord],
        now: datetime,
        *,
        open_attempts: bool,
    ) -> list[Job]:
        accounts = {
            a.id: a
            for a in await session.scalars(
                select(SocialAccount).where(SocialAccount.id.in_({t.social_account_id for t in targets}))
            )
        }
        links = list(
            await session.scalars(
                select(PostMedia)
                .where(PostMedia.post_id.in_({t.post_id for t in targets}))
                .order_by(PostMedia.post_id, PostMedia.order)
            )
        )
        thread_ids = {t.id: thread_media_ids(t.platform_options) for t in targets}
        wanted = {link.media_asset_id for link in links} | {
            m for t in targets for m in (t.media_ids or []) + thread_ids[t.id]
        }
        assets = (
            {a.id: a for a in await session.scalars(select(MediaAsset).where(MediaAsset.id.in_(wanted)))}
            if wanted
            else {}
        )
        links_of: dict[str, list[PostMedia]] = {}
        for link in links:
            links_of.setdefault(link.post_id, []).append(link)
        jobs = []
        attempts: list[dict[str, Any]] = []
        for target in targets:
            post = posts[target.post_id]
            post_links = links_of.get(post.id, [])
            attempt = {
                "id": new_id("att"),
                "post_id": post.id,
                "target_id": target.id,
                "social_account_id": target.social_account_id,
                "platform": target.platform,
                "attempt_number": target.attempt_count,
                "kind": "PUBLISH",
                "status": "STARTED",
                "started_at": now,
                "worker_id": self.worker_id,
            }
            if open_attempts:
                attempts.append(attempt)
            ids = target.media_ids or [link.media_asset_id for link in post_links]
            jobs.append(
                Job(
                    target_id=target.id,
                    post_id=post.id,
                    attempt_id=attempt["id"],
                    platform=target.platform,
                    account=accounts[target.social_account_id],
                    text=target.caption_override if target.caption_override is not None else (post.caption or ""),
                    first_comment=target.first_comment,
                    platform_options=target.platform_options or {},
                    media=[assets[m] for m in ids if m in assets],
                    thread_media={
                        m: assets[m]
                        for m in thread_ids[target.id]
                        if m in assets and assets[m].deleted_at is None and assets[m].status == "READY"
                    },
                    alt_texts={link.media_asset_id: link.alt_text for link in post_links},
                    material=target.idempotency_material,
                    due_at=target.next_attempt_at or target.scheduled_for,
                )
            )
        if attempts:
            await session.execute(insert(ATTEMPTS), attempts)  # a pipelined executemany, no ORM objects
        return jobs

    # ---- publish --------------------------------------------------------------------------------------

    async def _run(self, jobs: list[Job]) -> None:
        ready = [job for job in await asyncio.gather(*(self._prepare(j) for j in jobs)) if job.outcome is None]
        sent = await self._mark_sent(ready)
        async with self._heartbeat([job.target_id for job in sent]):
            await asyncio.gather(*(self._send(job) for job in sent))
        await self._follow_up_all(await self._finish(jobs))

    async def _follow_up_all(self, target_ids: list[str], *, parallel: int | None = None) -> None:
        # Side by side; a failure stays with its target (the follow-up sweep picks it up again).
        gate = asyncio.Semaphore(parallel or max(1, len(target_ids)))

        async def one(target_id: str) -> None:
            async with gate:
                await self.follow_up(target_id)

        results = await asyncio.gather(*(one(t) for t in target_ids), return_exceptions=True)
        for target_id, result in zip(target_ids, results, strict=True):
            if isinstance(result, Exception):
                log.error("publishing.follow_up_failed", target_id=target_id, error_type=type(result).__name__)

    @contextlib.asynccontextmanager
    async def _heartbeat(self, target_ids: list[str]) -> AsyncIterator[None]:
        """Keep our leases alive while requests are in flight, so a slow send is never taken over."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.lease.total_seconds() / 3)
                try:
                    async with unit_of_work(self.sessionmaker) as session:
                        await session.execute(
                            update(PostTarget)
                            .where(
                                PostTarget.id.in_(target_ids),
                                PostTarget.lease_owner == self.worker_id,
                                PostTarget.status == "PUBLISHING",
                            )
                            .values(lease_expires_at=utcnow() + self.lease)
                            .execution_options(synchronize_session=False)
                        )
                except Exception:
                    log.exception("publishing.heartbeat_failed")

        task = asyncio.create_task(beat()) if target_ids else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _prepare(self, job: Job, *, with_media: bool = True) -> Job:
        """Everything that can fail before anything is sent: adapter, rules, credentials, media.

        Never raises: a target that cannot be prepared gets an outcome instead of looping through leases.
        """
        try:
            return await self._prepare_unsafe(job, with_media=with_media)
        except PermanentError as exc:
            job.outcome = Failed(exc.error_code, exc.message, account_expired=exc.error_code == "AUTH_EXPIRED")
        except (RetryableError, ReauthRequired, OutcomeUnknown) as exc:
            job.outcome = Retry(f"Could not prepare the post: {exc.message}")
        except Exception as exc:
            log.exception("publishing.prepare_failed", target_id=job.target_id)
            job.outcome = Retry(f"Could not prepare the post ({type(exc).__name__}).")
        return job

    async def _prepare_unsafe(self, job: Job, *, with_media: bool) -> Job:
        adapter = self.adapter_for(job.platform)
        if adapter is None:
            job.outcome = Failed("PLATFORM_ERROR", f"Publishing to {job.platform} is not supported yet.")
            return job
        if gone := [m for m in thread_media_ids(job.platform_options) if m not in job.thread_media]:
            # Checked before the root goes out: a thread that cannot be finished is not started.
            job.outcome = Failed("VALIDATION_FAILED", f"Thread media {', '.join(gone)} is no longer available.")
            return job
        assets = [*job.media, *job.thread_media.values()]
        content = content_of(
            platform=job.platform,
            text=job.text,
            first_comment=job.first_comment,
            platform_options=job.platform_options,
            media_ids=[m.id for m in job.media],
            facts={a.id: facts_of(a) for a in assets},
        )
        if problems := validate_content(content):
            job.outcome = Failed("VALIDATION_FAILED", "; ".join(problems))
            return job
        job.creds = await self.credentials.get(job.account)
        media = (
            tuple([await load_media_file(self.media, a, job.alt_texts.get(a.id)) for a in job.media])
            if with_media
            else ()
        )
        job.outbound = OutboundPost(
            target_id=job.target_id,
            text=job.text,
            account_handle=job.account.handle,
            account_external_id=job.account.external_id,
            media=media,
            platform_options=job.platform_options,
        )
        job.material = job.material or adapter.prepare(job.outbound)
        job.outbound = replace(job.outbound, idempotency_key=job.material)
        return job

    async def _mark_sent(self, jobs: list[Job]) -> list[Job]:
        """Record that the requests are about to leave; only targets still ours (not canceled) go."""
        if not jobs:
            return []
        now = utcnow()
        async with unit_of_work(self.sessionmaker) as session:
            await lock_post_ids(session, [j.post_id for j in jobs])  # lock order: posts, then targets (as cancel)
            for job in jobs:
                job.sent_after = now
                if job.due_at is not None:
                    PUBLISH_LAG.observe(max(0.0, (now - job.due_at).total_seconds()))
            marked = set(
                await session.scalars(
                    _MARK_SENT,
                    {
                        "ids": [j.target_id for j in jobs],
                        "materials": [j.material for j in jobs],
                        "worker": self.worker_id,
                        "now": now,
                        "lease_until": now + self.lease,
                    },
                )
            )
            sent_ids = [j.attempt_id for j in jobs if j.target_id in marked]
            skipped_ids = [j.attempt_id for j in jobs if j.target_id not in marked]
            if sent_ids:
                await session.execute(
                    update(ATTEMPTS).where(ATTEMPTS.c.id == any_ids(sent_ids)).values(status="SENT", sent_at=now)
                )
            if skipped_ids:
                await session.execute(
                    update(ATTEMPTS)
                    .where(ATTEMPTS.c.id == any_ids(skipped_ids))
                    .values(status="ABANDONED", finished_at=now)
                )
        # Targets not marked were canceled (or taken over) meanwhile: nothing was sent, nothing to record.
        return [j for j in jobs if j.target_id in marked]

    async def _send(self, job: Job) -> None:
        adapter = self.adapter_for(job.platform)
        assert adapter is not None and job.outbound is not None and job.creds is not None
        try:
            try:
                result = await adapter.publish(job.creds, job.outbound)
            except ReauthRequired:
                # A 401 means the platform processed nothing, so sending again after a refresh is safe.
                job.creds = await self.credentials.get(job.account, force=True)
                result = await adapter.publish(job.creds, job.outbound)
            job.outcome = Published(result)
        except RetryableError as exc:
            job.outcome = Retry(exc.message, exc.retry_after, exc.rate_limited)
        except ReauthRequired as exc:
            job.outcome = Failed("AUTH_EXPIRED", exc.message, account_expired=True)
        except PermanentError as exc:
            job.outcome = Failed(exc.error_code, exc.message, account_expired=exc.error_code == "AUTH_EXPIRED")
        except OutcomeUnknown as exc:
            job.outcome = await self._lookup(adapter, job, exc.message)
        except Exception as exc:
            # Unclassified failure after the request may have left: treat as unknown, never re-send.
            log.exception("publishing.adapter_crashed", target_id=job.target_id, platform=job.platform)
            job.outcome = await self._lookup(adapter, job, f"Unexpected error ({type(exc).__name__}).")

    async def _lookup(self, adapter: PlatformAdapter, job: Job, detail: str) -> Outcome:
        assert job.outbound is not None
        outbound = replace(job.outbound, sent_after=job.sent_after)
        try:
            creds = job.creds or await self.credentials.get(job.account)
            found = await adapter.lookup(creds, outbound)
        except (OutcomeUnknown, RetryableError, ReauthRequired, PermanentError) as exc:
            return Failed("OUTCOME_UNKNOWN", f"{detail} The lookup could not tell ({exc.message}); not re-sent.")
        except Exception as exc:
            log.exception("publishing.lookup_crashed", target_id=job.target_id)
            return Failed("OUTCOME_UNKNOWN", f"{detail} The lookup failed ({type(exc).__name__}); not re-sent.")
        if found is not None:
            return Published(found)
        if job.material and job.creds is not None:
            # The platform dedupes on the material stored before sending (Bluesky rkey), so one resend now
            # is safe. The target stays PUBLISHING with sent_at set meanwhile: cancel and edit still see
            # that a request may have left.
            try:
                return Published(await adapter.publish(job.creds, outbound))
            except PlatformError as exc:
                message = f"{detail} The post was not found and a resend failed ({exc.message})."
                return Failed("OUTCOME_UNKNOWN", message)
        return Failed("OUTCOME_UNKNOWN", f"{detail} The post was not found, but it may still appear; not re-sent.")

    # ---- record ---------------------------------------------------------------------------------------

    async def _finish(self, jobs: list[Job]) -> list[str]:
        """Record every outcome in one transaction; returns the targets whose first comment is due now.

        Threads go to a follow-ups job due at once (a chain of up to 25 posts must not hold up the batch);
        a lone first comment is posted inline, with a queued job as the backstop.
        """
        done = [j for j in jobs if j.outcome is not None]
        if not done:
            return []
        now = utcnow()
        follow: dict[str, bool] = {}  # target id -> has a thread
        async with unit_of_work(self.sessionmaker) as session:
            posts = {p.id: p for p in await lock_rows(session, POSTS, [j.post_id for j in done])}
            targets = {t.id: t for t in await lock_rows(session, TARGETS, [j.target_id for j in done])}
            attempt_updates: list[dict[str, Any]] = []
            retry_at: dict[str, datetime] = {}
            account_changes: dict[str, dict[str, Any]] = {}
            for job in done:
                target = targets.get(job.target_id)
                if target is None or not may_record(target, job.outcome, self.worker_id):
                    continue
                attempt: dict[str, Any] = {
                    "id": job.attempt_id,
                    "finished_at": now,
                    "error_code": None,
                    "error_message": None,
                    "external_post_id": None,
                }
                due = apply_outcome(target, attempt, job, now, account_changes, self.policy)
                attempt_updates.append(attempt)
                if due is not None:
                    retry_at[target.post_id] = min(retry_at.get(target.post_id, due), due)
                if target.status == "PUBLISHED" and (kind := start_follow_ups(target)) is not None:
                    follow[target.id] = kind == "thread"
            await update_by_id(session, ATTEMPTS, attempt_updates)
            # Sorted, so two posts pausing the same accounts never lock them in opposite orders.
            for account_id in sorted(account_changes):
                await session.execute(
                    update(SocialAccount).where(SocialAccount.id == account_id).values(**account_changes[account_id])
                )
            retrying = sorted(retry_at)
            job_ids = await queue.enqueue_many(
                session,
                [
                    (queue.DISPATCH_POST, {"postId": pid, "generation": posts[pid].generation}, retry_at[pid])
                    for pid in retrying
                ],
            )
            for pid, job_id in zip(retrying, job_ids, strict=True):
                posts[pid].workflow_id = queue.workflow_id_for(job_id)
            # A lone comment is posted right after this commit; its job is the backstop if this worker dies
            # first (late enough that a comment still SENDING counts as stranded).
            await queue.enqueue_many(
                session,
                [
                    (queue.FOLLOW_UPS, {"targetId": t}, now if threaded else now + 2 * self.lease)
                    for t, threaded in follow.items()
                ],
            )
            # Plain rows: changes are written here (where the ORM flush used to happen), targets first since
            # the post's status is derived from the stored target rows. Change targets before this point.
            await write_changes(session, TARGETS, targets.values())
            await recompute_posts(session, list(posts.values()))
            await write_changes(session, POSTS, posts.values())
        return [t for t, threaded in follow.items() if not threaded]

    # ---- leases ---------------------------------------------------------------------------------------

    async def _take_over(self, target_id: str, post_id: str) -> Job | None:
        """Lock an expired lease: never-sent targets go back to SCHEDULED; sent ones come back as a job."""
        now = utcnow()
        async with unit_of_work(self.sessionmaker) as session:
            post = await lock_post(session, post_id)
            target = await lock_target(session, target_id)
            if (
                post is None
                or target is None
                or target.status != "PUBLISHING"
                or not target.lease_expires_at
                or target.lease_expires_at >= now
            ):
                return None
            attempt = await session.scalar(
                select(PublishAttempt)
                .where(PublishAttempt.target_id == target_id)
                .order_by(PublishAttempt.id.desc())
                .limit(1)
            )
            if target.sent_at is None and target.auto_attempts >= self.policy.max_attempts:
                # Workers keep dying on this target before sending: stop instead of looping forever.
                target.status, target.lease_owner, target.lease_expires_at = "FAILED", None, None
                target.error_code = "PLATFORM_ERROR"
                target.error_message = f"Publishing stopped after {target.auto_attempts} interrupted attempts."
                if attempt is not None and attempt.finished_at is None:
                    attempt.status, attempt.finished_at = "ABANDONED", now
                await recompute_post(session, post)
                return None
            if target.sent_at is None:
                # The request provably never left: publish it again.
                target.status, target.lease_owner, target.lease_expires_at = "SCHEDULED", None, None
                target.next_attempt_at = None
                if attempt is not None and attempt.finished_at is None:
                    attempt.status, attempt.finished_at = "ABANDONED", now
                job_id = await queue.enqueue_dispatch(session, post_id=post.id, generation=post.generation, due_at=now)
                post.workflow_id = queue.workflow_id_for(job_id)
                await recompute_post(session, post)
                return None
            target.lease_owner, target.lease_expires_at = self.worker_id, now + self.lease
            jobs = await self._jobs(session, {post.id: post}, [target], now, open_attempts=attempt is None)
        job = jobs[0]
        if attempt is not None:
            job.attempt_id = attempt.id
        job.sent_after = target.sent_at
        return job

    async def _resolve_and_finish(self, jobs: list[Job]) -> None:
        for job in jobs:
            adapter = self.adapter_for(job.platform)
            # Media is only needed when the lookup may end in a (safe, same-key) resend.
            prepared = await self._prepare(job, with_media=bool(job.material))
            if prepared.outcome is None and adapter is not None:
                job.outcome = await self._lookup(adapter, job, "The worker stopped after sending.")
            else:
                # Whatever stops the lookup, the request may have left: never fall back to a re-send.
                reason = prepared.outcome.message if prepared.outcome else "no adapter"
                job.outcome = Failed(
                    "OUTCOME_UNKNOWN", f"The worker stopped after sending; lookup impossible: {reason}"
                )
        await self._follow_up_all(await self._finish(jobs))
