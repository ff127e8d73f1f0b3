"""The error tree every service raises; `api/errors.py` renders it as api.md's error body."""

from __future__ import annotations

from typing import Any


class PostwrightError(Exception):
    status_code = 500
    code = "INTERNAL"

    def __init__(
        self,
        detail: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.details = details
        self.headers = headers


class ValidationFailed(PostwrightError):
    status_code, code = 400, "VALIDATION_FAILED"


class InvalidState(PostwrightError):
    status_code, code = 400, "INVALID_STATE"


class Unauthenticated(PostwrightError):
    status_code, code = 401, "UNAUTHENTICATED"

    def __init__(self) -> None:
        super().__init__("Unauthorized", headers={"WWW-Authenticate": "Bearer"})


class ForbiddenScope(PostwrightError):
    status_code, code = 403, "FORBIDDEN_SCOPE"


class ForbiddenRole(PostwrightError):
    status_code, code = 403, "FORBIDDEN_ROLE"


class NotFound(PostwrightError):
    status_code, code = 404, "NOT_FOUND"


class Conflict(PostwrightError):
    status_code, code = 409, "CONFLICT"


class PayloadTooLarge(PostwrightError):
    status_code, code = 413, "PAYLOAD_TOO_LARGE"


class IdempotencyKeyReused(PostwrightError):
    status_code, code = 422, "IDEMPOTENCY_KEY_REUSED"


class RateLimited(PostwrightError):
    status_code, code = 429, "RATE_LIMITED"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_seconds))})
        self.retry_after_seconds = retry_after_seconds
