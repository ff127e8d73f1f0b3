"""How a post's aggregate status follows from its targets (api.md's derivation rule)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class PostStatus(StrEnum):
    DRAFT = "DRAFT"
    NEEDS_APPROVAL = "NEEDS_APPROVAL"
    SCHEDULED = "SCHEDULED"
    PUBLISHING = "PUBLISHING"
    PARTIALLY_PUBLISHED = "PARTIALLY_PUBLISHED"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class TargetStatus(StrEnum):
    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    PUBLISHING = "PUBLISHING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELED = "CANCELED"


EDITABLE = {
    PostStatus.DRAFT,
    PostStatus.NEEDS_APPROVAL,
    PostStatus.SCHEDULED,
    PostStatus.FAILED,
    PostStatus.CANCELED,
}
DELETABLE = EDITABLE


def derive_post_status(target_statuses: Iterable[str], *, awaiting_approval: bool, canceled: bool) -> PostStatus:
    statuses = [TargetStatus(s) for s in target_statuses]
    pending = sum(s is TargetStatus.SCHEDULED for s in statuses)
    publishing = sum(s is TargetStatus.PUBLISHING for s in statuses)
    published = sum(s is TargetStatus.PUBLISHED for s in statuses)
    failed = sum(s is TargetStatus.FAILED for s in statuses)
    skipped = sum(s is TargetStatus.SKIPPED for s in statuses)
    done = published + failed + skipped

    if publishing or (pending and done):
        return PostStatus.PUBLISHING
    if pending:
        return PostStatus.SCHEDULED
    if awaiting_approval:
        return PostStatus.NEEDS_APPROVAL
    if canceled and not published:
        return PostStatus.CANCELED
    if published and failed:
        return PostStatus.PARTIALLY_PUBLISHED
    if published:
        return PostStatus.PUBLISHED
    if failed or (skipped and skipped == len(statuses)):
        return PostStatus.FAILED
    if statuses and all(s is TargetStatus.CANCELED for s in statuses):
        return PostStatus.CANCELED
    return PostStatus.DRAFT
