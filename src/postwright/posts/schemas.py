"""Request shapes of the posts API (flat `platforms[]` and nested `targets[]`) and response rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag

from postwright.db.models import Post, PostTarget, PublishAttempt
from postwright.kit.clock import isoformat_z
from postwright.publishing.threads import render_thread, thread_error

Caption = Annotated[str, Field(max_length=10000)]
FirstComment = Annotated[str, Field(max_length=2000)]
AltText = Annotated[str, Field(max_length=1000)]
Reason = Annotated[str, Field(max_length=1024)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MediaIds = Annotated[list[Id], Field(max_length=50)]


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


MediaKind = Annotated[Literal["IMAGE", "VIDEO", "GIF", "DOCUMENT"], BeforeValidator(_upper)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MediaItemIn(StrictModel):
    type: MediaKind
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    altText: AltText | None = None


class FlatTargetIn(StrictModel):
    accountId: Id
    captionOverride: Caption | None = None
    firstComment: FirstComment | None = None
    platformOptions: dict[str, Any] | None = None
    mediaIds: MediaIds | None = None


class NestedTargetIn(StrictModel):
    socialAccountId: Id
    captionOverride: Caption | None = None
    firstComment: FirstComment | None = None
    platformOptions: dict[str, Any] | None = None
    mediaIds: MediaIds | None = None


class _PostCommon(StrictModel):
    timezone: Annotated[str, Field(max_length=64)] | None = None
    mediaItems: Annotated[list[MediaItemIn], Field(max_length=20)] | None = None
    mediaIds: MediaIds | None = None
    mediaAltText: dict[Id, AltText] | None = None
    workspaceId: Id | None = None  # accepted for clients that send it; the header/key decides


class CreatePostFlat(_PostCommon):
    """Seed 003's CreatePostFlatDto."""

    content: Caption | None = None
    scheduledFor: Annotated[str, Field(max_length=64)] | None = None
    draftScheduledFor: Annotated[str, Field(max_length=64)] | None = None
    platforms: Annotated[list[FlatTargetIn], Field(min_length=1, max_length=50)]


class CreatePostNested(_PostCommon):
    caption: Caption | None = None
    scheduledAt: Annotated[str, Field(max_length=64)] | None = None
    scheduledFor: Annotated[str, Field(max_length=64)] | None = None
    draftScheduledAt: Annotated[str, Field(max_length=64)] | None = None
    draftScheduledFor: Annotated[str, Field(max_length=64)] | None = None
    targets: Annotated[list[NestedTargetIn], Field(min_length=1, max_length=50)]


def _shape_of(value: Any) -> str:
    if isinstance(value, dict):
        return "nested" if "targets" in value and "platforms" not in value else "flat"
    return "nested" if hasattr(value, "targets") else "flat"


PostBody = Annotated[
    Annotated[CreatePostFlat, Tag("flat")] | Annotated[CreatePostNested, Tag("nested")],
    Discriminator(_shape_of),
]


@dataclass
class TargetInput:
    social_account_id: str
    caption_override: str | None
    first_comment: str | None
    platform_options: dict[str, Any] | None
    media_ids: list[str]
    field_path: str


@dataclass
class PostInput:
    """Both request shapes, normalised."""

    caption: str | None
    scheduled_for: str | None
    draft_scheduled_for: str | None
    timezone: str | None
    targets: list[TargetInput]
    media_ids: list[str] = field(default_factory=list)
    media_items: list[MediaItemIn] = field(default_factory=list)
    media_alt_text: dict[str, str] = field(default_factory=dict)
    flat_shape: bool = True

    @classmethod
    def from_body(cls, body: CreatePostFlat | CreatePostNested) -> PostInput:
        return cls.from_flat(body) if isinstance(body, CreatePostFlat) else cls.from_nested(body)

    @classmethod
    def from_flat(cls, body: CreatePostFlat) -> PostInput:
        return cls(
            caption=body.content,
            scheduled_for=body.scheduledFor,
            draft_scheduled_for=body.draftScheduledFor,
            timezone=body.timezone,
            targets=[
                TargetInput(
                    t.accountId,
                    t.captionOverride,
                    t.firstComment,
                    t.platformOptions,
                    list(t.mediaIds or []),
                    f"platforms[{i}]",
                )
                for i, t in enumerate(body.platforms)
            ],
            media_ids=list(body.mediaIds or []),
            media_items=list(body.mediaItems or []),
            media_alt_text=dict(body.mediaAltText or {}),
            flat_shape=True,
        )

    @classmethod
    def from_nested(cls, body: CreatePostNested) -> PostInput:
        return cls(
            caption=body.caption,
            scheduled_for=body.scheduledFor or body.scheduledAt,
            draft_scheduled_for=body.draftScheduledFor or body.draftScheduledAt,
            timezone=body.timezone,
            targets=[
                TargetInput(
                    t.socialAccountId,
                    t.captionOverride,
                    t.firstComment,
                    t.platformOptions,
                    list(t.mediaIds or []),
                    f"targets[{i}]",
                )
                for i, t in enumerate(body.targets)
            ],
            media_ids=list(body.mediaIds or []),
            media_items=list(body.mediaItems or []),
            media_alt_text=dict(body.mediaAltText or {}),
            flat_shape=False,
        )


class CancelIn(StrictModel):
    reason: Reason | None = None


class PublishNowIn(StrictModel):
    leadSeconds: Annotated[int, Field(ge=0, le=300)] = 30


class RescheduleIn(StrictModel):
    scheduledFor: Annotated[str, Field(max_length=64)]
    timezone: Annotated[str, Field(max_length=64)] | None = None


class RejectIn(StrictModel):
    reason: Reason | None = None


def target_to_dict(target: PostTarget) -> dict[str, Any]:
    return {
        "id": target.id,
        "postId": target.post_id,
        "socialAccountId": target.social_account_id,
        "platform": target.platform,
        "status": target.status,
        "captionOverride": target.caption_override,
        "firstComment": target.first_comment,
        "firstCommentError": target.first_comment_error,
        "firstCommentAttempt": target.first_comment_attempt,
        "platformOptions": target.platform_options,
        "thread": render_thread(target.platform_options, target.thread_state),
        "threadError": thread_error(target.thread_state),
        "mediaIds": list(target.media_ids or []),
        "scheduledFor": isoformat_z(target.scheduled_for),
        "publishedAt": isoformat_z(target.published_at),
        "externalPostId": target.external_post_id,
        "externalUrl": target.external_url,
        "errorCode": target.error_code,
        "errorMessage": target.error_message,
        "attemptCount": target.attempt_count,
        "lastAttemptAt": isoformat_z(target.last_attempt_at),
        "createdAt": isoformat_z(target.created_at),
        "updatedAt": isoformat_z(target.updated_at),
    }


def post_to_dict(post: Post) -> dict[str, Any]:
    return {
        "id": post.id,
        "workspaceId": post.workspace_id,
        "createdByUserId": post.created_by_user_id,
        "status": post.status,
        "caption": post.caption,
        "scheduledAt": isoformat_z(post.scheduled_at),
        "timezone": post.timezone,
        "workflowId": post.workflow_id,
        "pendingWorkflowId": post.pending_workflow_id,
        "approvedByUserId": post.approved_by_user_id,
        "approvedAt": isoformat_z(post.approved_at),
        "createdViaApi": post.created_via_api,
        "createdViaFlatShape": post.created_via_flat_shape,
        "deletedAt": isoformat_z(post.deleted_at),
        "canceledAt": isoformat_z(post.canceled_at),
        "cancelReason": post.cancel_reason,
        "publishedAt": isoformat_z(post.published_at),
        "createdAt": isoformat_z(post.created_at),
        "updatedAt": isoformat_z(post.updated_at),
        "targets": [target_to_dict(t) for t in post.targets],
        "media": [
            {"postId": m.post_id, "mediaAssetId": m.media_asset_id, "order": m.order, "altText": m.alt_text}
            for m in post.media
        ],
    }


def status_to_dict(post: Post) -> dict[str, Any]:
    return {
        "id": post.id,
        "status": post.status,
        "scheduledAt": isoformat_z(post.scheduled_at),
        "publishedAt": isoformat_z(post.published_at),
        "targets": [
            {
                "id": t.id,
                "socialAccountId": t.social_account_id,
                "platform": t.platform,
                "status": t.status,
                "externalUrl": t.external_url,
                "externalPostId": t.external_post_id,
                "errorCode": t.error_code,
                "errorMessage": t.error_message,
                "attemptCount": t.attempt_count,
                "lastAttemptAt": isoformat_z(t.last_attempt_at),
                "nextAttemptAt": isoformat_z(
                    (t.next_attempt_at or t.scheduled_for) if t.status == "SCHEDULED" else None
                ),
                "firstCommentError": t.first_comment_error,
                "thread": render_thread(t.platform_options, t.thread_state),
                "threadError": thread_error(t.thread_state),
            }
            for t in post.targets
        ],
    }


def attempt_to_dict(attempt: PublishAttempt) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "postId": attempt.post_id,
        "targetId": attempt.target_id,
        "socialAccountId": attempt.social_account_id,
        "platform": attempt.platform,
        "attemptNumber": attempt.attempt_number,
        "kind": attempt.kind,
        "status": attempt.status,
        "startedAt": isoformat_z(attempt.started_at),
        "sentAt": isoformat_z(attempt.sent_at),
        "finishedAt": isoformat_z(attempt.finished_at),
        "errorCode": attempt.error_code,
        "errorMessage": attempt.error_message,
        "externalPostId": attempt.external_post_id,
    }
