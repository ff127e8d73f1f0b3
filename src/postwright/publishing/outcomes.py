"""What a publish attempt ends in, and how each outcome changes its target row.

The engine (engine.py) claims, sends and records; this module holds the pieces that decide: the outcome
types, the claimed-target `Job`, and the pure functions applied under the record transaction's locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from postwright.db.models import MediaAsset, Post, PostTarget, SocialAccount
from postwright.publishing.metrics import outcome_counter
from postwright.publishing.platforms.base import Credentials, OutboundPost, PublishResult
from postwright.publishing.retry import RetryPolicy
from postwright.publishing.status import RowState
from postwright.publishing.threads import new_thread_state, parse_thread

# The hot transactions work on plain row copies; the engine's `_take_over` (rare) uses mapped instances.
PostRecord = Post | RowState
TargetRecord = PostTarget | RowState


@dataclass(frozen=True)
class Published:
    result: PublishResult


@dataclass(frozen=True)
class Retry:
    message: str
    retry_after: timedelta | None = None
    rate_limited: bool = False


@dataclass(frozen=True)
class Failed:
    error_code: str
    message: str
    account_expired: bool = False


Outcome = Published | Retry | Failed


@dataclass
class Job:
    """One claimed target with everything needed to publish it."""

    target_id: str
    post_id: str
    attempt_id: str
    platform: str
    account: SocialAccount
    text: str
    first_comment: str | None
    platform_options: dict[str, Any]
    media: list[MediaAsset]
    thread_media: dict[str, MediaAsset]
    alt_texts: dict[str, str | None]
    material: str | None
    due_at: datetime | None = None
    sent_after: datetime | None = None
    outbound: OutboundPost | None = None
    creds: Credentials | None = None
    outcome: Outcome | None = None


def start_follow_ups(target: TargetRecord) -> str | None:
    """Open what follows a root that just landed: "thread", "comment", or None when nothing does."""
    kind = None
    if target.first_comment and target.first_comment_state is None:
        target.first_comment_state = "PENDING"
        kind = "comment"
    if target.thread_state is None and (parts := parse_thread(target.platform, target.platform_options)[0]):
        target.thread_state = new_thread_state(parts)
        kind = "thread"
    return kind


def may_record(target: TargetRecord, outcome: Outcome | None, worker_id: str) -> bool:
    """Whether this worker may record `outcome` on the target it claimed."""
    if target.status == "PUBLISHING" and target.lease_owner == worker_id:
        return True
    # Another worker took over after our lease ran out; a confirmed publish is still the truth.
    return isinstance(outcome, Published) and target.status not in ("PUBLISHED", "CANCELED")


def apply_outcome(
    target: TargetRecord,
    attempt: dict[str, Any],
    job: Job,
    now: datetime,
    account_changes: dict[str, dict[str, Any]],
    policy: RetryPolicy,
) -> datetime | None:
    """Apply one outcome to its target; fills `attempt` (the PublishAttempt row's new values)."""
    outcome = job.outcome
    target.lease_owner = target.lease_expires_at = None
    outcome_counter(job.platform, type(outcome).__name__.lower()).inc()
    if isinstance(outcome, Published):
        target.status, target.published_at = "PUBLISHED", now
        target.external_post_id = outcome.result.external_post_id
        target.external_url = outcome.result.external_url
        target.error_code = target.error_message = None
        target.next_attempt_at = None
        attempt.update(status="SUCCEEDED", external_post_id=outcome.result.external_post_id)
        return None
    if isinstance(outcome, Retry):
        delay = policy.next_delay(target.auto_attempts, retry_after=outcome.retry_after)
        code = "RATE_LIMITED" if outcome.rate_limited else "PLATFORM_UNAVAILABLE"
        attempt.update(status="RETRYING", error_code=code, error_message=outcome.message)
        if outcome.rate_limited:
            pause = outcome.retry_after or delay or timedelta(seconds=60)
            account_changes.setdefault(target.social_account_id, {})["paused_until"] = now + pause
        if delay is None:
            target.status, target.error_code, target.error_message = "FAILED", code, outcome.message
            attempt["status"] = "FAILED"
            return None
        target.status, target.sent_at = "SCHEDULED", None
        target.next_attempt_at = now + delay
        target.error_message = outcome.message
        return target.next_attempt_at
    assert isinstance(outcome, Failed)
    target.status, target.error_code, target.error_message = "FAILED", outcome.error_code, outcome.message
    attempt.update(status="FAILED", error_code=outcome.error_code, error_message=outcome.message)
    if outcome.account_expired:
        account_changes.setdefault(target.social_account_id, {})["status"] = "EXPIRED"
    return None
