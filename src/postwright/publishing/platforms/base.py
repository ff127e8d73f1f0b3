"""The adapter contract every platform follows (see shared/reference/platforms.md).

Adapters are pure: aiohttp only, no database, no settings imports. Every call ends in a
`PublishResult` or raises exactly one of the `PlatformError` subclasses below; the engine acts on
that classification and never on raw HTTP status codes.
"""

from __future__ import annotations

import functools
import importlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

import aiohttp


@dataclass(frozen=True)
class Credentials:
    """Decrypted credentials of one social account, as the adapter needs them."""

    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: datetime | None = None
    # Platform-specific extras: Bluesky {"appPassword", "serviceUrl", "did", "accessJwt"}, X {"userId"}.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaFile:
    """One media item to attach, already readable by the adapter."""

    kind: str  # IMAGE | VIDEO | GIF | DOCUMENT
    mime_type: str
    data: bytes | None = None  # bytes for platforms that take uploads
    url: str | None = None  # signed URL for platforms that pull by URL
    alt_text: str | None = None
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    # Known size when `data` is not loaded (schedule-time validation).
    size_bytes: int | None = None

    @property
    def known_size(self) -> int | None:
        return len(self.data) if self.data is not None else self.size_bytes


@dataclass(frozen=True)
class OutboundPost:
    """What to publish for one target."""

    target_id: str
    text: str
    account_handle: str
    account_external_id: str | None = None
    media: tuple[MediaFile, ...] = ()
    platform_options: dict[str, Any] = field(default_factory=dict)
    # Idempotency material chosen and stored before the request leaves (Bluesky rkey, ...).
    idempotency_key: str | None = None
    # Set for replies (first comment): the platform id of the post being replied to.
    reply_to_external_id: str | None = None
    # Lower bound of the window in which a lookup may match (when the first send was recorded).
    sent_after: datetime | None = None


@dataclass(frozen=True)
class PublishResult:
    external_post_id: str
    external_url: str | None = None


class PlatformError(Exception):
    """Base of every classified platform failure."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetryableError(PlatformError):
    """The platform documents that nothing was created; safe to try again later."""

    def __init__(self, message: str, *, retry_after: timedelta | None = None, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class PermanentError(PlatformError):
    """Fails again unchanged; `error_code` is one of api.md's target error codes."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class ReauthRequired(PlatformError):
    """401 / expired or revoked token: the engine refreshes once, else AUTH_EXPIRED."""


class OutcomeUnknown(PlatformError):
    """The request may have been processed; the engine calls lookup(), never re-sends blindly."""


class PlatformAdapter(Protocol):
    platform: ClassVar[str]  # adapter key: "X", "BLUESKY", ...

    def prepare(self, post: OutboundPost) -> str | None:
        """Idempotency material to store before sending (Bluesky rkey), or None."""
        ...

    async def validate(self, post: OutboundPost) -> list[str]:
        """Problems with the content by this platform's rules; empty when it may be sent."""
        ...

    async def publish(self, creds: Credentials, post: OutboundPost) -> PublishResult: ...

    async def lookup(self, creds: Credentials, post: OutboundPost) -> PublishResult | None:
        """After an unknown outcome: the post if it exists, None if provably absent.

        Raises OutcomeUnknown when the platform cannot tell.
        """
        ...

    async def reply(self, creds: Credentials, post: OutboundPost) -> PublishResult:
        """Post `post.text` as a reply/comment to `post.reply_to_external_id` (first comment)."""
        ...

    async def refresh(self, creds: Credentials) -> Credentials:
        """New credentials; PermanentError('AUTH_EXPIRED', ...) when the platform refuses."""
        ...


@dataclass
class AdapterContext:
    """What adapters get injected: one shared aiohttp session and their base URL override."""

    http: aiohttp.ClientSession
    base_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    timeout_seconds: float = 30.0


# --- Shared transport classification -------------------------------------------------------------
# Every adapter needs the same answer to "did the request leave?": a failure to connect means nothing
# reached the platform (Retryable); a timeout or a dropped connection after the request was written
# means it may have been processed (Unknown for creates, Retryable for reads and idempotent steps).


@dataclass(frozen=True)
class HttpAnswer:
    """A complete HTTP answer; the adapter classifies it by platform rules."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or {} when it is not JSON (error pages, empty bodies)."""
        try:
            return json.loads(self.body) if self.body else {}
        except ValueError:
            return {}


@functools.lru_cache(maxsize=16)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds, sock_connect=seconds)  # immutable: one per value will do


async def send_request(
    ctx: AdapterContext, method: str, url: str, *, creates: bool, what: str, **kwargs: Any
) -> HttpAnswer:
    """Send one request and turn transport failures into the contract's outcomes.

    `creates` marks a non-idempotent create: losing its answer is OutcomeUnknown, not Retryable.
    `what` names the call in messages (never the URL or headers: they may carry tokens).
    """
    timeout = _client_timeout(ctx.timeout_seconds)
    try:
        async with ctx.http.request(method, url, timeout=timeout, **kwargs) as resp:
            body = await resp.read()
            return HttpAnswer(status=resp.status, headers=resp.headers, body=body)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL) as exc:
        # Connection refused, DNS failure, connect timeout, unusable URL: the request never left.
        raise RetryableError(f"{what}: could not connect ({type(exc).__name__})") from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        detail = f"{what}: no complete answer ({type(exc).__name__})"
        if creates:
            raise OutcomeUnknown(detail) from exc
        raise RetryableError(detail) from exc


def retry_after_from(headers: Mapping[str, str], *epoch_reset_headers: str) -> timedelta | None:
    """How long to wait: `Retry-After` (seconds or HTTP date) first, else the latest epoch reset header."""
    raw = headers.get("Retry-After")
    if raw:
        if raw.strip().isdigit():
            return timedelta(seconds=int(raw.strip()))
        try:
            when = parsedate_to_datetime(raw)
            return max(when - datetime.now(UTC), timedelta(0))
        except (TypeError, ValueError):
            pass
    resets = [int(v) for h in epoch_reset_headers if (v := headers.get(h, "").strip()).isdigit()]
    if not resets:
        return None
    return max(datetime.fromtimestamp(max(resets), UTC) - datetime.now(UTC), timedelta(0))


# --- Shared text measure ----------------------------------------------------------------------------
# Platforms count "characters" as user-perceived characters (extended grapheme clusters). The `regex`
# module implements UAX #29 exactly; without it a conservative approximation covers combining marks,
# ZWJ emoji sequences, variation selectors, skin tones, keycaps, tag sequences and flag pairs.

try:
    _regex: Any = importlib.import_module("regex")
except ImportError:  # pragma: no cover - depends on the environment
    _regex = None

_JOINERS = frozenset({0x200D})
_EXTENDERS = (
    (0xFE00, 0xFE0F),  # variation selectors
    (0x1F3FB, 0x1F3FF),  # skin-tone modifiers
    (0xE0020, 0xE007F),  # tag characters (subdivision flags)
    (0x20E3, 0x20E3),  # combining enclosing keycap
)


def _extends(cp: int, ch: str) -> bool:
    if unicodedata.category(ch) in ("Mn", "Me", "Mc"):
        return True
    return any(lo <= cp <= hi for lo, hi in _EXTENDERS)


def _split_graphemes_fallback(text: str) -> list[str]:
    clusters: list[str] = []
    join_next = False
    for ch in text:
        cp = ord(ch)
        is_ri = 0x1F1E6 <= cp <= 0x1F1FF
        prev = clusters[-1] if clusters else ""
        pairs_flag = is_ri and len(prev) == 1 and 0x1F1E6 <= ord(prev) <= 0x1F1FF
        if clusters and (join_next or _extends(cp, ch) or cp in _JOINERS or pairs_flag or prev + ch == "\r\n"):
            clusters[-1] += ch
        else:
            clusters.append(ch)
        join_next = cp in _JOINERS
    return clusters


def split_graphemes(text: str) -> list[str]:
    """The user-perceived characters of `text` (extended grapheme clusters)."""
    if _regex is not None:
        return list(_regex.findall(r"\X", text))
    return _split_graphemes_fallback(text)
