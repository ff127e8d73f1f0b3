"""Platform credentials for publishing: decrypted on use, refreshed before they expire.

Refresh tokens rotate on most platforms, so a refresh happens once at a time per account: an asyncio lock
inside the process and the account's row lock across processes; the new pair is stored before use.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwright.db.models import SocialAccount
from postwright.db.session import unit_of_work
from postwright.kit.clock import utcnow
from postwright.kit.crypto import TokenCipher
from postwright.publishing.platforms.base import Credentials, PermanentError, PlatformAdapter, ReauthRequired

log = structlog.get_logger("postwright.publishing")
REFRESH_MARGIN = timedelta(minutes=5)
DECRYPTED_CACHE_SIZE = 10_000
T = TypeVar("T")


class CredentialStore:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        cipher: TokenCipher,
        adapter_for: Callable[[str], PlatformAdapter | None],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.cipher = cipher
        self.adapter_for = adapter_for
        self._refresh_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Decrypting is the same work for every target of an account; the ciphertext changes with
        # every stored token, so it is a safe cache key.
        self._decrypted: dict[bytes, dict[str, Any]] = {}

    def _decrypt(self, ciphertext: bytes) -> dict[str, Any]:
        secret = self._decrypted.get(ciphertext)
        if secret is None:
            if len(self._decrypted) >= DECRYPTED_CACHE_SIZE:
                self._decrypted.clear()
            secret = self._decrypted[ciphertext] = self.cipher.decrypt_json(ciphertext)
        return secret

    async def get(self, account: SocialAccount, *, force: bool = False) -> Credentials:
        """Decrypted credentials, refreshed first when about to expire (one refresh at a time per account)."""
        if account.credentials_encrypted is None:
            raise PermanentError("AUTH_EXPIRED", "The account is no longer connected.")
        creds = _credentials_from(self._decrypt(account.credentials_encrypted), account.token_expires_at)
        expiring = creds.expires_at is not None and creds.expires_at < utcnow() + REFRESH_MARGIN
        if not (force or expiring):
            return creds
        async with self._refresh_locks[account.id]:
            return await self._refresh(account, creds, force=force)

    async def call_with_refresh(
        self, account: SocialAccount, creds: Credentials, call: Callable[[Credentials], Awaitable[T]]
    ) -> T:
        """`call(creds)`; on a 401 refresh once and call again (the platform processed nothing).

        After a refresh the account object holds the new ciphertext, so `get(account)` returns the new pair.
        """
        try:
            return await call(creds)
        except ReauthRequired:
            return await call(await self.get(account, force=True))

    async def _refresh(self, account: SocialAccount, seen: Credentials, *, force: bool) -> Credentials:
        adapter = self.adapter_for(account.platform)
        async with unit_of_work(self.sessionmaker) as session:
            # The row lock serialises refreshes across workers: refresh tokens rotate, a second refresh
            # with the old token would fail and lock the user out.
            row = await session.scalar(
                select(SocialAccount)
                .where(SocialAccount.id == account.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if row is None or row.credentials_encrypted is None:
                raise PermanentError("AUTH_EXPIRED", "The account is no longer connected.")
            current = _credentials_from(self.cipher.decrypt_json(row.credentials_encrypted), row.token_expires_at)
            if current != seen and not (current.expires_at and current.expires_at < utcnow() + REFRESH_MARGIN):
                account.credentials_encrypted = row.credentials_encrypted
                return current  # another worker refreshed meanwhile
            if adapter is None:
                raise PermanentError("AUTH_EXPIRED", "The token expired and cannot be refreshed.")
            try:
                fresh = await adapter.refresh(current)
            except PermanentError:
                row.status = "EXPIRED"
                await session.commit()
                raise
            except ReauthRequired as exc:
                row.status = "EXPIRED"
                await session.commit()
                raise PermanentError("AUTH_EXPIRED", exc.message) from exc
            row.credentials_encrypted = self.cipher.encrypt_json(_credentials_to(fresh))
            row.token_expires_at = fresh.expires_at
            account.credentials_encrypted, account.token_expires_at = row.credentials_encrypted, row.token_expires_at
        log.info("publishing.token_refreshed", account_id=account.id, forced=force)
        return fresh


def _credentials_from(secret: dict[str, Any], expires_at: datetime | None) -> Credentials:
    known = {"accessToken", "refreshToken"}
    return Credentials(
        access_token=secret.get("accessToken"),
        refresh_token=secret.get("refreshToken"),
        expires_at=expires_at,
        extra={k: v for k, v in secret.items() if k not in known},
    )


def _credentials_to(creds: Credentials) -> dict[str, Any]:
    secret: dict[str, Any] = dict(creds.extra)
    if creds.access_token:
        secret["accessToken"] = creds.access_token
    if creds.refresh_token:
        secret["refreshToken"] = creds.refresh_token
    return secret
