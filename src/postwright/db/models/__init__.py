"""Every ORM model, imported here so Alembic sees the whole metadata."""

from postwright.db.models.audit_event import AuditEvent
from postwright.db.models.media import MediaAsset, StorageDeletion
from postwright.db.models.post import Post, PostMedia, PostTarget, PublishAttempt
from postwright.db.models.social_account import SocialAccount
from postwright.db.models.workspace import ApiKey, IdempotencyRecord, Membership, User, Workspace

__all__ = [
    "ApiKey",
    "AuditEvent",
    "IdempotencyRecord",
    "MediaAsset",
    "Membership",
    "Post",
    "PostMedia",
    "PostTarget",
    "PublishAttempt",
    "SocialAccount",
    "StorageDeletion",
    "User",
    "Workspace",
]
