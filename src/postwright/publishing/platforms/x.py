"""X (API v2) adapter: what postwright sends to X and how each answer is classified.

Decisions (shared/reference/platforms/x-bluesky-pinterest.md §1):
- A post is `POST /2/tweets`; the first comment is another post with `reply.in_reply_to_tweet_id`.
- Images go through the simple v2 upload; GIFs and videos through the dedicated chunked paths
  (initialize / append / finalize) and are attached only after STATUS says `succeeded`.
- X has no idempotency key: a lost create answer is OutcomeUnknown, and `lookup()` searches the
  account's recent posts from `sent_after` minus a lead, matching text with URLs stripped (X rewrites
  them to t.co) and, for replies, the replied-to id.
- A duplicate-content 403 on a re-send (sent_after set) means the earlier attempt landed: look it up.
- Refresh tokens rotate: the answer's refresh token replaces the old one, which stops working.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import html
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp

from postwright.publishing.platforms.base import (
    AdapterContext,
    Credentials,
    HttpAnswer,
    MediaFile,
    OutboundPost,
    OutcomeUnknown,
    PermanentError,
    PlatformError,
    PublishResult,
    ReauthRequired,
    RetryableError,
    retry_after_from,
    send_request,
    split_graphemes,
)


@dataclass(frozen=True)
class XSettings:
    """Every X number that may change, in one place."""

    api_base_url: str = "https://api.x.com"
    authorize_base_url: str = "https://x.com"
    public_base_url: str = "https://x.com"
    scopes: tuple[str, ...] = ("tweet.read", "tweet.write", "users.read", "offline.access", "media.write")
    # twitter-text config v3: code points in these ranges weigh 1, all others 2; a URL weighs 23.
    max_weighted_length: int = 280
    transformed_url_length: int = 23
    light_ranges: tuple[tuple[int, int], ...] = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
    max_images: int = 4
    image_max_bytes: int = 5 * 1024 * 1024
    gif_max_bytes: int = 15 * 1024 * 1024
    video_max_bytes: int = 8 * 1024 * 1024 * 1024
    video_min_ms: int = 500
    video_max_ms: int = 20 * 60 * 1000
    alt_text_max: int = 1000
    chunk_bytes: int = 1024 * 1024
    processing_max_wait_seconds: float = 300.0
    # Lookup window: from this long before the send was recorded (clock skew margin; X stamps on receipt)
    # up to now. Open-ended on purpose: media uploads and processing run between that record and the
    # create call, for minutes with video, and a window that closed earlier would miss the post.
    lookup_lead_seconds: int = 15
    lookup_page_size: int = 100
    lookup_max_pages: int = 10


X_SETTINGS = XSettings()

# Bare domains ("example.com") are auto-linked by X too; only scheme/www URLs are weighed as 23 here,
# so a text full of bare domains may still be refused by X itself (classified CONTENT_REJECTED).
_URL = re.compile(r"(?:https?://|www\.)[^\s]+", re.IGNORECASE)
_EMOJI_MARKS = frozenset({0xFE0F, 0x20E3, 0x200D})


@functools.cache
def _ascii_is_light(light_ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= 0 and hi >= 0x7F for lo, hi in light_ranges)


def _is_emoji(cluster: str) -> bool:
    return any(ord(c) >= 0x1F000 or ord(c) in _EMOJI_MARKS for c in cluster)


def _weigh(segment: str, settings: XSettings) -> int:
    if segment.isascii() and _ascii_is_light(settings.light_ranges):
        # No ASCII character is an emoji or joins a cluster, so each weighs 1: skip the grapheme split,
        # which dominates the cost for the common plain-text post (the worker and the fake weigh every one).
        return len(segment)
    total = 0
    for cluster in split_graphemes(segment):
        if _is_emoji(cluster):
            total += 2  # an emoji sequence (ZWJ, skin tone, flag, keycap) counts once, as 2
            continue
        for ch in cluster:
            light = any(lo <= ord(ch) <= hi for lo, hi in settings.light_ranges)
            total += 1 if light else 2
    return total


def weighted_length(text: str, settings: XSettings = X_SETTINGS) -> int:
    """The length X counts against its 280 limit (twitter-text weighting)."""
    text = unicodedata.normalize("NFC", text)
    total, pos = 0, 0
    for match in _URL.finditer(text):
        total += _weigh(text[pos : match.start()], settings) + settings.transformed_url_length
        pos = match.end()
    return total + _weigh(text[pos:], settings)


def validate_post(post: OutboundPost, settings: XSettings = X_SETTINGS) -> list[str]:
    """Problems with `post` under X's own limits."""
    problems: list[str] = []
    length = weighted_length(post.text)
    if length > settings.max_weighted_length:
        problems.append(f"Text is {length} weighted characters; X allows {settings.max_weighted_length}.")
    if not post.text.strip() and not post.media:
        problems.append("X needs text or media.")
    problems.extend(_media_problems(post.media, settings))
    return problems


def _media_problems(media: tuple[MediaFile, ...], settings: XSettings) -> list[str]:
    problems: list[str] = []
    kinds = [m.kind for m in media]
    if any(k not in ("IMAGE", "GIF", "VIDEO") for k in kinds):
        problems.append("X accepts images, one GIF or one video; documents are not supported.")
    if kinds.count("IMAGE") > settings.max_images:
        problems.append(f"X allows at most {settings.max_images} images per post.")
    if ("GIF" in kinds or "VIDEO" in kinds) and len(kinds) > 1:
        problems.append("A GIF or video must be the only media of an X post.")
    limits = {"IMAGE": settings.image_max_bytes, "GIF": settings.gif_max_bytes, "VIDEO": settings.video_max_bytes}
    for i, item in enumerate(media, 1):
        size = item.known_size
        if size is None:
            problems.append(f"Media {i}: X needs the file bytes to upload it.")
        elif item.kind in limits and size > limits[item.kind]:
            problems.append(f"Media {i}: {size} bytes is over X's {limits[item.kind]}-byte limit.")
        duration = item.duration_ms if item.kind == "VIDEO" else None
        if duration is not None and not settings.video_min_ms <= duration <= settings.video_max_ms:
            problems.append(f"Media {i}: X videos must last 0.5 s to {settings.video_max_ms // 60000} min.")
        if item.alt_text and len(item.alt_text) > settings.alt_text_max:
            problems.append(f"Media {i}: alt text is over {settings.alt_text_max} characters.")
    return problems


# -- answer classification --------------------------------------------------------------------------------


def _message(answer: HttpAnswer) -> str:
    body = answer.json()
    if isinstance(body, dict):
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        # invalid-request bodies carry a generic `detail`; the specific reason is in errors[0].
        for candidate in (first.get("message"), body.get("detail"), first.get("detail"), body.get("title")):
            if isinstance(candidate, str) and candidate:
                return candidate
    return f"HTTP {answer.status}"


def _mentions_media(answer: HttpAnswer, message: str) -> bool:
    body = answer.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    params = [k for e in errors or [] if isinstance(e, dict) for k in (e.get("parameters") or {})]
    return "media" in message.lower() or any(str(k).startswith("media") for k in params)


def _rate_limit_wait(headers: Any) -> timedelta | None:
    resets = ["x-rate-limit-reset"]
    for scope in ("user", "app"):
        if headers.get(f"x-{scope}-limit-24hour-remaining") == "0":
            resets.append(f"x-{scope}-limit-24hour-reset")  # a spent daily cap outlasts the 15-min window
    return retry_after_from(headers, *resets)


def classify(answer: HttpAnswer, *, creates: bool, media_step: bool = False) -> PlatformError:
    """The contract outcome of a non-2xx X answer."""
    status, message = answer.status, _message(answer)
    body = answer.json()
    problem_type = str(body.get("type", "")) if isinstance(body, dict) else ""
    if status == 401:
        return ReauthRequired("X refused the access token (401).")
    if "usage-capped" in problem_type:
        return PermanentError("RATE_LIMITED", f"X usage cap reached: {message}")
    if status == 429:
        wait = _rate_limit_wait(answer.headers)
        return RetryableError(f"X rate limit: {message}", retry_after=wait, rate_limited=True)
    if status >= 500:
        detail = f"X answered HTTP {status}: {message}"
        return OutcomeUnknown(detail) if creates else RetryableError(detail)
    if media_step and status in (400, 403, 413, 415):
        return PermanentError("MEDIA_REJECTED", f"X refused the media: {message}")
    if status == 403 and "duplicate" in message.lower():
        return PermanentError("DUPLICATE_CONTENT", message)
    if status in (400, 403):
        code = "MEDIA_REJECTED" if _mentions_media(answer, message) or "video" in message.lower() else None
        return PermanentError(code or "CONTENT_REJECTED", message)
    return PermanentError("PLATFORM_ERROR", f"X answered HTTP {status}: {message}")


def _is_duplicate(error: PlatformError) -> bool:
    return isinstance(error, PermanentError) and error.error_code == "DUPLICATE_CONTENT"


def _comparable(text: str) -> str:
    """Text as X echoes it, reduced so a sent text and the stored one compare equal."""
    text = _URL.sub(" ", html.unescape(unicodedata.normalize("NFC", text)))
    return " ".join(text.split())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(creds: Credentials) -> str:
    if not creds.access_token:
        raise ReauthRequired("No X access token stored for this account.")
    return creds.access_token


# -- the adapter ----------------------------------------------------------------------------------------


class XAdapter:
    platform: ClassVar[str] = "X"

    def __init__(self, ctx: AdapterContext, settings: XSettings = X_SETTINGS) -> None:
        self.ctx = ctx
        self.settings = settings
        self.api = (ctx.base_url or settings.api_base_url).rstrip("/")

    def prepare(self, post: OutboundPost) -> str | None:
        return None  # X offers no client-chosen key; lookup() matches on text and time

    async def validate(self, post: OutboundPost) -> list[str]:
        return validate_post(post, self.settings)

    async def publish(self, creds: Credentials, post: OutboundPost) -> PublishResult:
        token = _token(creds)
        media_ids = [await self._upload(token, item) for item in post.media]
        body: dict[str, Any] = {"text": post.text} if post.text else {}
        if media_ids:
            body["media"] = {"media_ids": media_ids}
        if post.reply_to_external_id:
            body["reply"] = {"in_reply_to_tweet_id": post.reply_to_external_id}
        if reply_settings := post.platform_options.get("replySettings"):
            body["reply_settings"] = reply_settings
        answer = await self._call("POST", "/2/tweets", token, creates=True, what="X create post", json=body)
        if answer.status in (200, 201):
            return self._result(creds, post, str(answer.json()["data"]["id"]))
        error = classify(answer, creates=True)
        # A re-send refused as duplicate: the earlier attempt most likely landed.
        if _is_duplicate(error) and post.sent_after and (found := await self.lookup(creds, post)):
            return found
        raise error

    async def reply(self, creds: Credentials, post: OutboundPost) -> PublishResult:
        if not post.reply_to_external_id:
            raise ValueError("reply() needs post.reply_to_external_id")
        return await self.publish(creds, post)

    async def lookup(self, creds: Credentials, post: OutboundPost) -> PublishResult | None:
        """Find the post among the account's recent posts; raises only OutcomeUnknown / ReauthRequired."""
        token = _token(creds)
        user_id = creds.extra.get("userId") or post.account_external_id
        if not user_id:
            user_id = (await fetch_profile(self.ctx, token, self.settings, reauth=True)).id
        params: dict[str, str] = {
            "max_results": str(self.settings.lookup_page_size),
            "tweet.fields": "created_at,text,referenced_tweets",
        }
        if post.sent_after:
            params["start_time"] = _iso(post.sent_after - timedelta(seconds=self.settings.lookup_lead_seconds))
        for _ in range(self.settings.lookup_max_pages):
            body = await self._timeline_page(token, str(user_id), params)
            if (match := self._match(body.get("data") or [], post)) is not None:
                return self._result(creds, post, str(match["id"]))
            next_token = (body.get("meta") or {}).get("next_token")
            if not next_token:
                return None
            params["pagination_token"] = str(next_token)
        raise OutcomeUnknown("Too many recent X posts to rule out that the post exists.")

    async def refresh(self, creds: Credentials) -> Credentials:
        if not creds.refresh_token:
            raise PermanentError("AUTH_EXPIRED", "No X refresh token stored; reconnect the account.")
        form = {"grant_type": "refresh_token", "refresh_token": creds.refresh_token}
        answer = await _token_call(self.ctx, self.settings, form)
        if answer.status == 200:
            return _credentials_from(answer.json(), creds)
        if answer.status in (400, 401):
            reason = answer.json().get("error_description") if isinstance(answer.json(), dict) else None
            raise PermanentError("AUTH_EXPIRED", f"X refused the refresh: {reason or answer.status}")
        raise _token_error(answer)

    # -- internals ----------------------------------------------------------------------------------------
    async def _call(self, method: str, path: str, token: str, *, creates: bool, what: str, **kwargs: Any) -> HttpAnswer:
        headers = {"Authorization": f"Bearer {token}"}
        return await send_request(
            self.ctx, method, self.api + path, creates=creates, what=what, headers=headers, **kwargs
        )

    def _result(self, creds: Credentials, post: OutboundPost, post_id: str) -> PublishResult:
        username = creds.extra.get("username") or post.account_handle.lstrip("@")
        base = self.settings.public_base_url
        url = f"{base}/{username}/status/{post_id}" if username else f"{base}/i/status/{post_id}"
        return PublishResult(external_post_id=post_id, external_url=url)

    def _match(self, tweets: list[dict[str, Any]], post: OutboundPost) -> dict[str, Any] | None:
        wanted = _comparable(post.text)
        matches = []
        for tweet in tweets:
            if _comparable(str(tweet.get("text", ""))) != wanted:
                continue
            replied = {r.get("id") for r in tweet.get("referenced_tweets") or [] if r.get("type") == "replied_to"}
            if post.reply_to_external_id and post.reply_to_external_id not in replied:
                continue
            matches.append(tweet)
        # Newest first: the last match is the earliest attempt, the one a later re-send duplicated.
        return matches[-1] if matches else None

    async def _timeline_page(self, token: str, user_id: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            answer = await self._call(
                "GET", f"/2/users/{user_id}/tweets", token, creates=False, what="X recent posts", params=params
            )
        except RetryableError as exc:
            raise OutcomeUnknown(f"Could not ask X for recent posts: {exc.message}") from exc
        if answer.status == 401:
            raise ReauthRequired("X refused the access token (401).")
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict) or ("errors" in body and "data" not in body):
            raise OutcomeUnknown(f"X could not list recent posts: {_message(answer)}")
        return body

    async def _upload(self, token: str, item: MediaFile) -> str:
        if item.data is None:
            raise PermanentError("MEDIA_REJECTED", "X needs the media bytes to upload them.")
        if item.kind == "IMAGE" and len(item.data) <= self.settings.image_max_bytes:
            media_id, processing = await self._simple_upload(token, item, item.data)
        else:
            media_id, processing = await self._chunked_upload(token, item, item.data)
        await self._await_processing(token, media_id, processing)
        if item.alt_text and item.kind in ("IMAGE", "GIF"):
            await self._set_alt_text(token, media_id, item.alt_text)
        return media_id

    async def _media_call(self, method: str, path: str, token: str, what: str, **kwargs: Any) -> dict[str, Any]:
        answer = await self._call(method, path, token, creates=False, what=what, **kwargs)
        if answer.status >= 300:
            raise classify(answer, creates=False, media_step=True)
        body = answer.json()
        return body.get("data") or {} if isinstance(body, dict) else {}

    async def _simple_upload(self, token: str, item: MediaFile, data: bytes) -> tuple[str, dict[str, Any] | None]:
        form = aiohttp.FormData()
        form.add_field("media", data, filename="media", content_type=item.mime_type)
        form.add_field("media_category", "tweet_image")
        form.add_field("media_type", item.mime_type)
        result = await self._media_call("POST", "/2/media/upload", token, "X media upload", data=form)
        return str(result["id"]), result.get("processing_info")

    async def _chunked_upload(self, token: str, item: MediaFile, data: bytes) -> tuple[str, dict[str, Any] | None]:
        category = {"GIF": "tweet_gif", "VIDEO": "tweet_video"}.get(item.kind, "tweet_image")
        init = {"media_type": item.mime_type, "total_bytes": len(data), "media_category": category}
        started = await self._media_call("POST", "/2/media/upload/initialize", token, "X media init", json=init)
        media_id = str(started["id"])
        size = self.settings.chunk_bytes
        for index, offset in enumerate(range(0, len(data), size)):
            form = aiohttp.FormData()
            form.add_field("segment_index", str(index))
            form.add_field("media", data[offset : offset + size], filename="chunk", content_type=item.mime_type)
            await self._media_call("POST", f"/2/media/upload/{media_id}/append", token, "X media append", data=form)
        done = await self._media_call("POST", f"/2/media/upload/{media_id}/finalize", token, "X media finalize")
        return media_id, done.get("processing_info")

    async def _await_processing(self, token: str, media_id: str, info: dict[str, Any] | None) -> None:
        deadline = time.monotonic() + self.settings.processing_max_wait_seconds
        while info and info.get("state") != "succeeded":
            if info.get("state") == "failed":
                error = info.get("error") or {}
                raise PermanentError("MEDIA_REJECTED", error.get("message") or "X could not process the media.")
            wait = max(float(info.get("check_after_secs") or 0), 0.0)
            if time.monotonic() + wait > deadline:
                # Nothing was posted yet: uploading again later is safe.
                raise RetryableError("X is still processing the media; try again later.")
            await asyncio.sleep(wait)
            params = {"command": "STATUS", "media_id": media_id}
            status = await self._media_call("GET", "/2/media/upload", token, "X media status", params=params)
            info = status.get("processing_info")

    async def _set_alt_text(self, token: str, media_id: str, alt_text: str) -> None:
        body = {"id": media_id, "metadata": {"alt_text": {"text": alt_text}}}
        await self._media_call("POST", "/2/media/metadata", token, "X media alt text", json=body)


# -- account connection helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class XProfile:
    id: str
    username: str
    name: str
    profile_image_url: str | None = None


async def fetch_profile(
    ctx: AdapterContext, access_token: str, settings: XSettings = X_SETTINGS, *, reauth: bool = False
) -> XProfile:
    """`GET /2/users/me`. A refused token raises PermanentError('AUTH_EXPIRED') (ReauthRequired if `reauth`)."""
    url = (ctx.base_url or settings.api_base_url).rstrip("/") + "/2/users/me"
    params = {"user.fields": "profile_image_url,username,name,verified"}
    headers = {"Authorization": f"Bearer {access_token}"}
    try:
        answer = await send_request(ctx, "GET", url, creates=False, what="X profile", params=params, headers=headers)
    except RetryableError as exc:
        if reauth:
            raise OutcomeUnknown(exc.message) from exc
        raise
    if answer.status == 200:
        data = answer.json().get("data") or {}
        return XProfile(
            str(data["id"]), str(data["username"]), str(data.get("name", "")), data.get("profile_image_url")
        )
    if answer.status == 401:
        if reauth:
            raise ReauthRequired("X refused the access token (401).")
        raise PermanentError("AUTH_EXPIRED", "X refused the access token.")
    error = classify(answer, creates=False)
    raise OutcomeUnknown(error.message) if reauth else error


def build_authorize_url(
    ctx: AdapterContext,
    *,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    settings: XSettings = X_SETTINGS,
) -> str:
    """The browser URL that starts X's OAuth 2.0 (PKCE S256) consent."""
    if not ctx.client_id:
        raise PermanentError("VALIDATION_FAILED", "POSTWRIGHT_X_CLIENT_ID is not set.")
    query = {
        "response_type": "code",
        "client_id": ctx.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(settings.scopes),
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    return f"{(ctx.base_url or settings.authorize_base_url).rstrip('/')}/i/oauth2/authorize?{urlencode(query)}"


async def exchange_code(
    ctx: AdapterContext, *, code: str, redirect_uri: str, code_verifier: str, settings: XSettings = X_SETTINGS
) -> Credentials:
    """Trade the 30-second authorization code for tokens (do it at once in the callback)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    form["code_verifier"] = code_verifier
    answer = await _token_call(ctx, settings, form)
    if answer.status == 200:
        return _credentials_from(answer.json(), Credentials())
    if answer.status in (400, 401):
        reason = answer.json().get("error_description") if isinstance(answer.json(), dict) else None
        raise PermanentError("VALIDATION_FAILED", f"X refused the authorization code: {reason or answer.status}")
    raise _token_error(answer)


async def _token_call(ctx: AdapterContext, settings: XSettings, form: dict[str, str]) -> HttpAnswer:
    url = (ctx.base_url or settings.api_base_url).rstrip("/") + "/2/oauth2/token"
    headers: dict[str, str] = {}
    if ctx.client_id and ctx.client_secret:  # confidential client
        pair = base64.b64encode(f"{ctx.client_id}:{ctx.client_secret}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    elif ctx.client_id:
        form = {**form, "client_id": ctx.client_id}  # public client
    return await send_request(ctx, "POST", url, creates=False, what="X token", data=form, headers=headers)


def _token_error(answer: HttpAnswer) -> PlatformError:
    if answer.status == 429:
        return RetryableError("X rate limit on the token endpoint.", retry_after=_rate_limit_wait(answer.headers))
    if answer.status >= 500:
        return RetryableError(f"X token endpoint answered HTTP {answer.status}.")
    return PermanentError("PLATFORM_ERROR", f"X token endpoint answered HTTP {answer.status}.")


def _credentials_from(body: dict[str, Any], previous: Credentials) -> Credentials:
    expires_in = body.get("expires_in")
    expires_at = datetime.now(UTC) + timedelta(seconds=int(expires_in)) if expires_in else None
    return Credentials(
        access_token=str(body["access_token"]),
        # Rotation: the new refresh token replaces the old one, which X no longer accepts.
        refresh_token=body.get("refresh_token") or previous.refresh_token,
        expires_at=expires_at,
        extra=dict(previous.extra),
    )
