"""Checks run before an imported account is stored: Bluesky logs in with the app password at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from postwright.accounts.schemas import SocialAccountCreate
from postwright.accounts.service import CredentialVerifier
from postwright.errors import ValidationFailed
from postwright.publishing.platforms.base import AdapterContext, PermanentError, RetryableError
from postwright.publishing.platforms.bluesky import verify_login

HttpProvider = Callable[[], Awaitable[aiohttp.ClientSession]]


def bluesky_verifier(http: HttpProvider, timeout_seconds: float) -> CredentialVerifier:
    async def verify(data: SocialAccountCreate) -> dict[str, Any]:
        creds = data.credentials
        assert creds.appPassword
        ctx = AdapterContext(http=await http(), timeout_seconds=timeout_seconds)
        try:
            login = await verify_login(
                ctx, identifier=data.handle, app_password=creds.appPassword, service_url=creds.serviceUrl
            )
        except PermanentError as exc:
            raise ValidationFailed(
                f"Bluesky refused the login: {exc.message}",
                details=[{"field": "credentials.appPassword", "message": exc.message}],
            ) from exc
        except RetryableError as exc:
            raise ValidationFailed(f"Bluesky could not be reached to check the login: {exc.message}") from exc
        secret = {k: v for k, v in login.credentials.extra.items() if v is not None}
        if login.credentials.access_token:
            secret["accessToken"] = login.credentials.access_token
        if login.credentials.refresh_token:
            secret["refreshToken"] = login.credentials.refresh_token
        return {
            "handle": login.handle or data.handle,
            "displayName": login.display_name,
            "avatarUrl": login.avatar,
            "externalId": login.did,
            "credentials": secret,
        }

    return verify
