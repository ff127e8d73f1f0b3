"""Request and response shapes of social accounts; credentials never leave the server."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from postwright.db.models import SocialAccount
from postwright.kit.clock import isoformat_z
from postwright.posts.schemas import StrictModel
from postwright.publishing.rules import PLATFORMS

Platform = Literal[PLATFORMS]  # type: ignore[valid-type]
Short = Annotated[str, Field(min_length=1, max_length=320)]
Token = Annotated[str, Field(min_length=1, max_length=8192)]


class CredentialsIn(StrictModel):
    accessToken: Token | None = None
    refreshToken: Token | None = None
    expiresAt: Annotated[str, Field(max_length=64)] | None = None
    appPassword: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    serviceUrl: Annotated[str, Field(max_length=2048)] | None = None
    userId: Annotated[str, Field(max_length=320)] | None = None


class SocialAccountCreate(StrictModel):
    platform: Platform
    handle: Short
    displayName: Short | None = None
    avatarUrl: Annotated[str, Field(max_length=2048)] | None = None
    externalId: Short | None = None
    credentials: CredentialsIn


def account_to_dict(account: SocialAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "workspaceId": account.workspace_id,
        "platform": account.platform,
        "handle": account.handle,
        "displayName": account.display_name,
        "avatarUrl": account.avatar_url,
        "externalId": account.external_id,
        "status": account.status,
        "tokenExpiresAt": isoformat_z(account.token_expires_at),
        "createdAt": isoformat_z(account.created_at),
        "updatedAt": isoformat_z(account.updated_at),
    }
