"""Connected social accounts: import with existing tokens, list, disconnect; tokens encrypted at rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.accounts.schemas import SocialAccountCreate
from postwright.audit.service import audit_service
from postwright.db.models import Post, PostTarget, SocialAccount
from postwright.errors import Conflict, NotFound, ValidationFailed
from postwright.kit.clock import utcnow
from postwright.kit.crypto import TokenCipher
from postwright.kit.ids import new_id
from postwright.posts.timing import parse_instant
from postwright.workspaces.auth import Principal, Role

# A platform-specific check run before an import is stored (Bluesky logs in); returns profile facts
# (handle, displayName, avatarUrl, externalId) and extra credential fields to keep.
CredentialVerifier = Callable[[SocialAccountCreate], Awaitable[dict[str, Any]]]


class AccountsService:
    def __init__(self) -> None:
        self.verifiers: dict[str, CredentialVerifier] = {}

    async def list(self, session: AsyncSession, principal: Principal) -> list[SocialAccount]:
        rows = await session.scalars(
            select(SocialAccount)
            .where(SocialAccount.workspace_id == principal.workspace_id, SocialAccount.deleted_at.is_(None))
            .order_by(SocialAccount.id)
        )
        return list(rows)

    async def get(self, session: AsyncSession, principal: Principal, account_id: str) -> SocialAccount:
        account = await session.scalar(
            select(SocialAccount).where(
                SocialAccount.id == account_id,
                SocialAccount.workspace_id == principal.workspace_id,
                SocialAccount.deleted_at.is_(None),
            )
        )
        if account is None:
            raise NotFound(f"Social account {account_id} not found.")
        return account

    async def import_account(
        self, session: AsyncSession, principal: Principal, data: SocialAccountCreate, cipher: TokenCipher
    ) -> tuple[SocialAccount, bool]:
        """Store an account with tokens the user already has; re-importing the same handle reconnects it."""
        principal.require_role(Role.ADMIN, "connect social accounts")
        creds = data.credentials
        if data.platform == "BLUESKY":
            if not creds.appPassword:
                raise ValidationFailed(
                    "Bluesky accounts need credentials.appPassword.",
                    details=[{"field": "credentials.appPassword", "message": "required for BLUESKY"}],
                )
        elif not creds.accessToken:
            raise ValidationFailed(
                "credentials.accessToken is required.",
                details=[{"field": "credentials.accessToken", "message": "required"}],
            )
        expires_at = (
            parse_instant(creds.expiresAt, timezone=None, field="credentials.expiresAt") if creds.expiresAt else None
        )
        profile: dict[str, Any] = {}
        verifier = self.verifiers.get(data.platform)
        if verifier is not None:
            profile = await verifier(data)
        secret = {k: v for k, v in creds.model_dump().items() if v is not None and k != "expiresAt"}
        secret.update(profile.pop("credentials", {}))
        handle = profile.get("handle") or data.handle
        existing = await session.scalar(
            select(SocialAccount).where(
                SocialAccount.workspace_id == principal.workspace_id,
                SocialAccount.platform == data.platform,
                func.lower(SocialAccount.handle) == handle.lower(),
                SocialAccount.deleted_at.is_(None),
            )
        )
        created = existing is None
        account = existing or SocialAccount(
            id=new_id("soc"), workspace_id=principal.workspace_id, platform=data.platform
        )
        account.handle = handle
        account.display_name = profile.get("displayName") or data.displayName or account.display_name
        account.avatar_url = profile.get("avatarUrl") or data.avatarUrl or account.avatar_url
        account.external_id = profile.get("externalId") or data.externalId or creds.userId or account.external_id
        account.status = "ACTIVE"
        account.token_expires_at = expires_at
        account.credentials_encrypted = cipher.encrypt_json(secret)
        account.paused_until = None
        if created:
            session.add(account)
        await session.flush()
        audit_service.record(
            session,
            workspace_id=principal.workspace_id,
            action="account.connect" if created else "account.reconnect",
            subject_type="social_account",
            subject_id=account.id,
            principal=principal,
            data={"platform": account.platform, "handle": account.handle},
        )
        return account, created

    async def delete(self, session: AsyncSession, principal: Principal, account_id: str) -> None:
        """Disconnect; refused while a scheduled or publishing target still needs the account."""
        principal.require_role(Role.ADMIN, "disconnect social accounts")
        account = await self.get(session, principal, account_id)
        pending = await session.scalar(
            select(func.count())
            .select_from(PostTarget)
            .join(Post, Post.id == PostTarget.post_id)
            .where(
                PostTarget.social_account_id == account.id,
                PostTarget.status.in_(("SCHEDULED", "PUBLISHING")),
                Post.deleted_at.is_(None),
            )
        )
        if pending:
            raise Conflict(
                f"{pending} scheduled target(s) still publish to this account; cancel or edit those posts first."
            )
        account.deleted_at = utcnow()
        account.credentials_encrypted = None
        audit_service.record(
            session,
            workspace_id=principal.workspace_id,
            action="account.delete",
            subject_type="social_account",
            subject_id=account.id,
            principal=principal,
            data={"platform": account.platform, "handle": account.handle},
        )


accounts_service = AccountsService()
