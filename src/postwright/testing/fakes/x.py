"""Fake X (API v2): the calls postwright makes, answered and refused the way X does.

Serves OAuth 2.0 (authorize → code, token exchange with PKCE, refresh with rotation: a used refresh
token stops working), `GET /2/users/me`, `POST /2/tweets`, `DELETE /2/tweets/{id}`,
`GET /2/users/{id}/tweets`, the v2 media upload (simple, and chunked initialize/append/finalize with
STATUS polling) and `POST /2/media/metadata`.

Tokens: an access token works when it was issued by the fake's token endpoint or registered with
`register_account(...)` / `POST /_fake/accounts`. For sandbox friendliness any token starting with
`fake-` or `sandbox-` is also accepted and gets its own auto-created account (same token → same user);
pass `auto_accept_prefixes=()` to `create_x_app` to turn that off.

Like X, stored post text has URLs rewritten to t.co links, `&<>` HTML-escaped, and a t.co media link
appended when media is attached, so lookups must match the way a real client has to.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from postwright.publishing.platforms.x import X_SETTINGS, weighted_length
from postwright.testing.fakes.common import (
    Call,
    FakeApp,
    FakePlatform,
    FakePost,
    FormPart,
    ScriptedFailure,
    admin_routes,
    endpoint,
    parse_multipart,
)

DEFAULT_SCOPE = "tweet.read tweet.write users.read offline.access media.write"
ACCESS_TOKEN_TTL = 7200
CODE_TTL = 30
TWEETS_WINDOW_LIMIT = 100  # POST /2/tweets per user per 15 min, reported in x-rate-limit-* headers
IMAGE_CATEGORIES = {"tweet_image", "dm_image"}
GIF_CATEGORIES = {"tweet_gif", "dm_gif"}
VIDEO_CATEGORIES = {"tweet_video", "amplify_video", "dm_video"}
MEDIA_TYPES = {
    "video/mp4", "video/webm", "video/mp2t", "video/quicktime", "image/jpeg", "image/gif", "image/bmp",
    "image/png", "image/webp", "image/pjpeg", "image/tiff", "text/srt", "text/vtt",
}  # fmt: skip
_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_TWITTER_EPOCH_MS = 1288834974657
_INVALID_REQUEST = "https://api.twitter.com/2/problems/invalid-request"
DUPLICATE_MESSAGE = "You are not allowed to create a Tweet with duplicate content."


@dataclass
class XAccount:
    user_id: str
    username: str
    name: str
    profile_image_url: str = "https://pbs.twimg.com/profile_images/0/fake_normal.jpg"
    verified: bool = False
    scope: str = DEFAULT_SCOPE


@dataclass
class TokenInfo:
    user_id: str
    expires_at: datetime | None = None
    revoked: bool = False


@dataclass
class AuthCode:
    user_id: str
    redirect_uri: str
    challenge: str | None
    method: str
    scope: str
    expires_at: datetime


@dataclass
class XMedia:
    id: str
    owner: str
    media_type: str
    category: str
    total_bytes: int
    chunks: dict[int, int] = field(default_factory=dict)  # segment_index -> bytes received
    state: str = "uploading"  # uploading | pending | in_progress | succeeded | failed
    polls: int = 0
    stuck: bool = False
    alt_text: str | None = None

    @property
    def media_key(self) -> str:
        prefix = "3" if self.category in IMAGE_CATEGORIES else "16" if self.category in GIF_CATEGORIES else "13"
        return f"{prefix}_{self.id}"


def problem(status: int, title: str, detail: str, type_: str = "about:blank", **extra: Any) -> JSONResponse:
    return JSONResponse({"title": title, "detail": detail, "type": type_, "status": status, **extra}, status)


def invalid_request(message: str, parameters: dict[str, Any] | None = None) -> JSONResponse:
    body = {
        "errors": [{"message": message, "parameters": parameters or {}}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": _INVALID_REQUEST,
    }
    return JSONResponse(body, 400)


def unauthorized() -> JSONResponse:
    return problem(401, "Unauthorized", "Unauthorized")


def oauth_error(description: str, error: str = "invalid_request", status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status)


class FakeX(FakePlatform):
    platform = "X"
    create_ops = frozenset({"tweets.create"})

    def __init__(self, *, auto_accept_prefixes: tuple[str, ...] = ("fake-", "sandbox-"), seed: int | None = None):
        super().__init__(seed=seed)
        self.auto_accept_prefixes = auto_accept_prefixes
        self.processing_check_after_secs = 1
        self.processing_polls = 1  # STATUS answers "in_progress" this many times before "succeeded"
        self._ids = threading.Lock()
        self._seq = 0
        # (owning account, text the client sent) -> its posts: the duplicate-content check, without a scan.
        self._posts_by_text: dict[tuple[str, str], list[FakePost]] = {}
        self._init_state()

    def _init_state(self) -> None:
        self.accounts: dict[str, XAccount] = {}
        self.access_tokens: dict[str, TokenInfo] = {}
        self.refresh_tokens: dict[str, str] = {}  # live refresh token -> user id
        self.spent_refresh_tokens: set[str] = set()
        self.codes: dict[str, AuthCode] = {}
        self.media: dict[str, XMedia] = {}
        self.authorize_as: str | None = None

    def reset(self, *, accounts: bool = False) -> None:
        super().reset(accounts=accounts)
        with self._lock:
            self._posts_by_text.clear()
            self.media.clear()
            self.codes.clear()
            if accounts:
                self._init_state()

    # -- posts -----------------------------------------------------------------------------------------
    def add_post(self, post: FakePost) -> FakePost:
        with self._lock:
            super().add_post(post)
            text = post.body.get("text") if isinstance(post.body, dict) else None
            if isinstance(text, str):
                self._posts_by_text.setdefault((post.account, text), []).append(post)
        return post

    def has_live_post_with_text(self, account: str, text: str) -> bool:
        """`any(p.body.get("text") == text for p in posts(account=account))`, without the scan."""
        with self._lock:
            return any(
                not p.deleted for owner in self._owners(account) for p in self._posts_by_text.get((owner, text), ())
            )

    # -- accounts and tokens ---------------------------------------------------------------------------
    def next_id(self) -> str:
        with self._ids:
            self._seq += 1
            millis = int(self.now().timestamp() * 1000) - _TWITTER_EPOCH_MS
            return str((millis << 22) | (self._seq & 0x3FFFFF))

    def register_account(
        self,
        *,
        username: str,
        user_id: str | None = None,
        name: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        expires_in: int | None = None,
    ) -> XAccount:
        with self._lock:
            account = XAccount(user_id=user_id or self.next_id(), username=username, name=name or username)
            self.accounts[account.user_id] = account
            if access_token:
                expires = self.now() + timedelta(seconds=expires_in) if expires_in else None
                self.access_tokens[access_token] = TokenInfo(account.user_id, expires)
            if refresh_token:
                self.refresh_tokens[refresh_token] = account.user_id
            self.authorize_as = self.authorize_as or account.user_id
            return account

    def register_account_json(self, data: dict[str, Any]) -> dict[str, Any]:
        account = self.register_account(
            username=str(data["username"]),
            user_id=data.get("user_id"),
            name=data.get("name"),
            access_token=data.get("access_token"),
            refresh_token=data.get("refresh_token"),
            expires_in=data.get("expires_in"),
        )
        if data.get("authorize_as"):
            self.authorize_as = account.user_id
        return {"user_id": account.user_id, "username": account.username, "name": account.name}

    def list_accounts_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"user_id": a.user_id, "username": a.username, "name": a.name} for a in self.accounts.values()]

    def account_keys_of(self, account: str) -> list[str]:
        with self._lock:
            found = self.accounts.get(account)
            tokens = [t for t, info in self.access_tokens.items() if info.user_id == account]
        return [account, *([found.username] if found else []), *tokens]

    def expire_token(self, token: str) -> bool:
        with self._lock:
            info = self.access_tokens.get(token) or self._auto_account(token)
            if info is None:
                return False
            info.expires_at = self.now() - timedelta(seconds=1)
            return True

    def issue_tokens(self, user_id: str) -> dict[str, Any]:
        access, refresh = f"xat-{secrets.token_urlsafe(24)}", f"xrt-{secrets.token_urlsafe(24)}"
        with self._lock:
            self.access_tokens[access] = TokenInfo(user_id, self.now() + timedelta(seconds=ACCESS_TOKEN_TTL))
            self.refresh_tokens[refresh] = user_id
            scope = self.accounts[user_id].scope
        return {
            "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_TTL,
            "access_token": access,
            "scope": scope,
            "refresh_token": refresh,
        }

    def _auto_account(self, token: str) -> TokenInfo | None:
        if not self.auto_accept_prefixes or not token.startswith(self.auto_accept_prefixes):
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        user_id = str(int(digest[:15], 16))
        if user_id not in self.accounts:
            self.register_account(username=f"sandbox_{digest[:8]}", user_id=user_id, name="Sandbox User")
        info = TokenInfo(user_id)
        self.access_tokens[token] = info
        return info

    def authenticate(self, request: Request) -> tuple[XAccount, str] | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        token = header[7:].strip()
        with self._lock:
            info = self.access_tokens.get(token) or self._auto_account(token)
            if info is None or info.revoked or (info.expires_at and info.expires_at <= self.now()):
                return None
            return self.accounts[info.user_id], token

    # -- answers ---------------------------------------------------------------------------------------
    def rate_headers(
        self, user_id: str, *, remaining: int | None = None, reset_in: int | None = None
    ) -> dict[str, str]:
        now = self.now()
        window_start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
        reset = int((now + timedelta(seconds=reset_in)).timestamp()) if reset_in is not None else None
        if remaining is None:
            used = self.count_posts_since(user_id, window_start)
            remaining = max(TWEETS_WINDOW_LIMIT - used, 0)
        return {
            "x-rate-limit-limit": str(TWEETS_WINDOW_LIMIT),
            "x-rate-limit-remaining": str(remaining),
            "x-rate-limit-reset": str(reset or int((window_start + timedelta(minutes=15)).timestamp())),
        }

    def failure_response(self, failure: ScriptedFailure, op: str) -> Response:
        kind = failure.kind
        if kind == "rate_limited":
            headers = self.rate_headers("", remaining=0, reset_in=failure.retry_after)
            if failure.with_retry_after:
                headers["retry-after"] = str(failure.retry_after)
            body = {"errors": [{"code": 88, "message": failure.message or "Rate limit exceeded"}]}
            return JSONResponse(body, 429, headers=headers)
        if kind == "server_error":
            status = failure.status or 500
            titles = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
            title = titles.get(status, "Gateway Timeout")
            return problem(status, title, failure.message or title)
        if kind == "unauthorized":
            return unauthorized()
        if kind == "duplicate":
            return problem(403, "Forbidden", failure.message or DUPLICATE_MESSAGE)
        if kind == "media_rejected":
            return invalid_request(failure.message or "Your media IDs are invalid.", {"media.media_ids": []})
        return problem(403, "Forbidden", failure.message or "You are not permitted to perform this action.")


# -- handlers ----------------------------------------------------------------------------------------------


async def _authorized(
    fake: FakeX, call: Call, passthrough: tuple[str, ...] = ("answer_lost",)
) -> tuple[XAccount, str] | Response:
    """Authenticate, then apply latency and scripted failures; `passthrough` kinds the handler plays."""
    auth = fake.authenticate(call.request)
    if auth is None:
        return unauthorized()
    account, token = auth
    call.record.account = account.user_id
    failure = await fake.gate(call, [token, account.user_id, account.username])
    if failure is not None and failure.kind not in passthrough:
        return fake.failure_response(failure, call.op)
    return auth


def _tco(url: str, salt: str) -> str:
    return "https://t.co/" + hashlib.sha256(f"{salt}{url}".encode()).hexdigest()[:10]


def stored_text(text: str, post_id: str, has_media: bool) -> str:
    """What X keeps and returns: t.co links, HTML-escaped &<>, a media link at the end."""
    escaped = html.escape(_URL.sub(lambda m: _tco(m.group(0), post_id), text), quote=False)
    return f"{escaped} {_tco('media', post_id)}".strip() if has_media else escaped


def _check_media(fake: FakeX, account: XAccount, media_ids: list[Any]) -> Response | None:
    if not isinstance(media_ids, list) or not 1 <= len(media_ids) <= X_SETTINGS.max_images:
        return invalid_request("media.media_ids size must be between 1 and 4", {"media.media_ids": media_ids})
    items = [fake.media.get(str(m)) for m in media_ids]
    if any(m is None or m.owner != account.user_id or m.state != "succeeded" for m in items):
        return invalid_request("Your media IDs are invalid.", {"media.media_ids": media_ids})
    animated = [m for m in items if m and m.category not in IMAGE_CATEGORIES]
    if animated and len(items) > 1:
        return invalid_request("Your media IDs are invalid.", {"media.media_ids": media_ids})
    return None


def _check_tweet(fake: FakeX, account: XAccount, body: Any) -> Response | None:
    if not isinstance(body, dict):
        return invalid_request("Request body must be a JSON object")
    text, media = body.get("text"), body.get("media") or {}
    media_ids = media.get("media_ids") if isinstance(media, dict) else None
    if text is not None and not isinstance(text, str):
        return invalid_request("text must be a string", {"text": [text]})
    if not text and not media_ids:
        return invalid_request("Requests must include text or media", {"text": [text]})
    if text and weighted_length(text) > X_SETTINGS.max_weighted_length:
        return invalid_request("Your Tweet text is too long.", {"text": [text]})
    if media_ids is not None and (bad := _check_media(fake, account, media_ids)):
        return bad
    reply_to = (body.get("reply") or {}).get("in_reply_to_tweet_id")
    if reply_to is not None and fake.find_post(str(reply_to)) is None:
        message = "You attempted to reply to a Tweet that is deleted or not visible to you."
        return invalid_request(message, {"reply.in_reply_to_tweet_id": [reply_to]})
    if text and fake.has_live_post_with_text(account.user_id, text):
        return problem(403, "Forbidden", DUPLICATE_MESSAGE)
    return None


def make_handlers(fake: FakeX) -> list[Route]:
    async def create_tweet(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        if (refusal := _check_tweet(fake, account, call.payload)) is not None:
            return refusal
        body: dict[str, Any] = call.payload
        post_id = fake.next_id()
        media_ids = [str(m) for m in ((body.get("media") or {}).get("media_ids") or [])]
        reply_to = (body.get("reply") or {}).get("in_reply_to_tweet_id")
        text = stored_text(body.get("text") or "", post_id, bool(media_ids))
        fake.add_post(FakePost(post_id, account.user_id, text, fake.now(), body, reply_to, media_ids))
        if call.record.scripted == "answer_lost":
            return fake.lost_answer(call.failure, call.op)
        data = {"id": post_id, "text": text, "edit_history_tweet_ids": [post_id]}
        return JSONResponse({"data": data}, 201, headers=fake.rate_headers(account.user_id))

    async def delete_tweet(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        post = fake.find_post(call.request.path_params["id"])
        if post is None or post.deleted:
            return JSONResponse({"data": {"deleted": False}})
        if post.account != auth[0].user_id:
            return problem(403, "Forbidden", "You are not allowed to delete this Tweet.")
        post.deleted = True
        return JSONResponse({"data": {"deleted": True}})

    async def users_me(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        return JSONResponse({"data": _user_json(auth[0], call.request.query_params.get("user.fields", ""))})

    async def user_tweets(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        return _timeline(fake, call.request)

    return [
        Route("/2/tweets", endpoint(fake, "tweets.create", create_tweet), methods=["POST"]),
        Route("/2/tweets/{id}", endpoint(fake, "tweets.delete", delete_tweet), methods=["DELETE"]),
        Route("/2/users/me", endpoint(fake, "users.me", users_me), methods=["GET"]),
        Route("/2/users/{id}/tweets", endpoint(fake, "users.tweets", user_tweets), methods=["GET"]),
    ]


def _user_json(account: XAccount, fields_param: str) -> dict[str, Any]:
    data: dict[str, Any] = {"id": account.user_id, "name": account.name, "username": account.username}
    wanted = set(filter(None, fields_param.split(",")))
    if "profile_image_url" in wanted:
        data["profile_image_url"] = account.profile_image_url
    if "verified" in wanted:
        data["verified"] = account.verified
    return data


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _timeline(fake: FakeX, request: Request) -> Response:
    q = request.query_params
    user_id = request.path_params["id"]
    try:
        max_results = int(q.get("max_results", "10"))
        start, end = _parse_time(q.get("start_time")), _parse_time(q.get("end_time"))
        offset = int(q.get("pagination_token", "0"))
    except ValueError as exc:
        return invalid_request(f"Invalid query parameter: {exc}")
    if not 5 <= max_results <= 100:
        return invalid_request("The `max_results` query parameter value is not between 5 and 100")
    if user_id not in fake.accounts:
        detail = f"Could not find user with id: [{user_id}]."
        return JSONResponse({"errors": [{"value": user_id, "detail": detail, "title": "Not Found Error"}]})
    posts = sorted(fake.posts(account=user_id), key=lambda p: p.created_at, reverse=True)
    posts = [p for p in posts if (start is None or p.created_at >= start) and (end is None or p.created_at <= end)]
    page = posts[offset : offset + max_results]
    if not page:
        return JSONResponse({"meta": {"result_count": 0}})
    wanted = set(filter(None, q.get("tweet.fields", "").split(",")))
    meta: dict[str, Any] = {"result_count": len(page), "newest_id": page[0].id, "oldest_id": page[-1].id}
    if offset + max_results < len(posts):
        meta["next_token"] = str(offset + max_results)
    return JSONResponse({"data": [_tweet_json(p, wanted) for p in page], "meta": meta})


def _tweet_json(post: FakePost, wanted: set[str]) -> dict[str, Any]:
    data: dict[str, Any] = {"id": post.id, "text": post.text, "edit_history_tweet_ids": [post.id]}
    if "created_at" in wanted:
        data["created_at"] = post.created_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{post.created_at:%f}"[:3] + "Z"
    if "author_id" in wanted:
        data["author_id"] = post.account
    if "referenced_tweets" in wanted and post.reply_to:
        data["referenced_tweets"] = [{"type": "replied_to", "id": str(post.reply_to)}]
    return data


# -- media -------------------------------------------------------------------------------------------------


def _media_limit(category: str) -> int:
    if category in IMAGE_CATEGORIES:
        return X_SETTINGS.image_max_bytes
    if category in GIF_CATEGORIES:
        return X_SETTINGS.gif_max_bytes
    return X_SETTINGS.video_max_bytes


def _media_response(media: XMedia, fake: FakeX, *, with_processing: bool) -> JSONResponse:
    data: dict[str, Any] = {"id": media.id, "media_key": media.media_key, "size": media.total_bytes}
    data["expires_after_secs"] = 86400
    if with_processing and media.state != "succeeded":
        data["processing_info"] = {"state": media.state, "check_after_secs": fake.processing_check_after_secs}
    elif with_processing:
        data["processing_info"] = {"state": "succeeded", "progress_percent": 100}
    if media.state == "failed":
        error = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}
        data["processing_info"] = {"state": "failed", "progress_percent": 100, "error": error}
    return JSONResponse({"data": data})


def make_media_handlers(fake: FakeX) -> list[Route]:
    async def simple_upload(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        try:
            parts = parse_multipart(call.raw, call.request.headers.get("content-type", ""))
        except ValueError:
            return invalid_request("Request body must be multipart/form-data")
        media_part = parts.get("media")
        if media_part is None:
            return invalid_request("The `media` field is required", {"media": []})
        category = _text(parts.get("media_category")) or "tweet_image"
        media_type = _text(parts.get("media_type")) or media_part.content_type or "image/jpeg"
        if (refusal := _check_media_kind(category, media_type, len(media_part.data))) is not None:
            return refusal
        media = XMedia(fake.next_id(), auth[0].user_id, media_type, category, len(media_part.data))
        media.state = "succeeded" if category in IMAGE_CATEGORIES else "pending"
        fake.media[media.id] = media
        return _media_response(media, fake, with_processing=media.state != "succeeded")

    async def initialize(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        body = call.payload if isinstance(call.payload, dict) else {}
        category, media_type = str(body.get("media_category", "")), str(body.get("media_type", ""))
        total = body.get("total_bytes")
        if not isinstance(total, int) or total <= 0:
            return invalid_request("total_bytes must be a positive integer", {"total_bytes": [total]})
        if (refusal := _check_media_kind(category, media_type, total)) is not None:
            return refusal
        media = XMedia(fake.next_id(), auth[0].user_id, media_type, category, total)
        fake.media[media.id] = media
        data = {"id": media.id, "media_key": media.media_key, "expires_after_secs": 1295999}
        return JSONResponse({"data": data})

    async def append(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        media = fake.media.get(call.request.path_params["id"])
        if media is None or media.owner != auth[0].user_id or media.state != "uploading":
            return invalid_request("Invalid media_id", {"id": [call.request.path_params["id"]]})
        parts = parse_multipart(call.raw, call.request.headers.get("content-type", ""))
        segment, chunk = _text(parts.get("segment_index")), parts.get("media")
        if segment is None or not segment.isdigit() or chunk is None:
            return invalid_request("segment_index and media are required")
        media.chunks[int(segment)] = len(chunk.data)
        return JSONResponse({"data": {"expires_at": int(fake.now().timestamp()) + 86400}})

    async def finalize(call: Call) -> Response:
        auth = await _authorized(fake, call, ("stuck_processing",))
        if isinstance(auth, Response):
            return auth
        media = fake.media.get(call.request.path_params["id"])
        if media is None or media.owner != auth[0].user_id:
            return invalid_request("Invalid media_id", {"id": [call.request.path_params["id"]]})
        if sum(media.chunks.values()) != media.total_bytes:
            return invalid_request("File size mismatch: the appended segments do not add up to total_bytes")
        media.state = "succeeded" if media.category in IMAGE_CATEGORIES else "pending"
        if call.record.scripted == "stuck_processing":
            media.stuck = True
        return _media_response(media, fake, with_processing=media.state != "succeeded")

    async def status(call: Call) -> Response:
        auth = await _authorized(fake, call, ("stuck_processing", "media_rejected"))
        if isinstance(auth, Response):
            return auth
        media = fake.media.get(call.request.query_params.get("media_id", ""))
        if media is not None and call.record.scripted == "stuck_processing":
            media.stuck = True
        if media is not None and call.record.scripted == "media_rejected":
            media.state = "failed"
        return _status(fake, call.request.query_params.get("media_id", ""))

    async def metadata(call: Call) -> Response:
        auth = await _authorized(fake, call)
        if isinstance(auth, Response):
            return auth
        body = call.payload if isinstance(call.payload, dict) else {}
        media = fake.media.get(str(body.get("id", "")))
        alt = ((body.get("metadata") or {}).get("alt_text") or {}).get("text")
        if media is None or media.owner != auth[0].user_id:
            return invalid_request("Invalid media id", {"id": [body.get("id")]})
        if not isinstance(alt, str) or len(alt) > X_SETTINGS.alt_text_max:
            return invalid_request("alt_text.text must be at most 1000 characters")
        media.alt_text = alt
        return JSONResponse({"data": {"id": media.id, "associated_metadata": {"alt_text": {"text": alt}}}})

    upload_routes = [
        ("/2/media/upload", "media.upload", simple_upload, ["POST"]),
        ("/2/media/upload", "media.status", status, ["GET"]),
        ("/2/media/upload/initialize", "media.initialize", initialize, ["POST"]),
        ("/2/media/upload/{id}/append", "media.append", append, ["POST"]),
        ("/2/media/upload/{id}/finalize", "media.finalize", finalize, ["POST"]),
        ("/2/media/metadata", "media.metadata", metadata, ["POST"]),
    ]
    return [Route(path, endpoint(fake, op, handler), methods=m) for path, op, handler, m in upload_routes]


def _text(part: FormPart | None) -> str | None:
    return part.text.strip() if part is not None else None


def _check_media_kind(category: str, media_type: str, size: int) -> Response | None:
    allowed = IMAGE_CATEGORIES | GIF_CATEGORIES | VIDEO_CATEGORIES | {"subtitles"}
    if category not in allowed:
        return invalid_request(f"Invalid media_category: {category}", {"media_category": [category]})
    if media_type not in MEDIA_TYPES:
        return invalid_request(f"Invalid media_type: {media_type}", {"media_type": [media_type]})
    if size > _media_limit(category):
        return invalid_request("File size exceeds the limit for this media category", {"total_bytes": [size]})
    return None


def _status(fake: FakeX, media_id: str) -> Response:
    media = fake.media.get(media_id)
    if media is None:
        return invalid_request("Invalid media_id", {"media_id": [media_id]})
    if media.state in ("pending", "in_progress") and not media.stuck:
        media.polls += 1
        media.state = "succeeded" if media.polls > fake.processing_polls else "in_progress"
    elif media.stuck:
        media.state = "in_progress"
    return _media_response(media, fake, with_processing=True)


# -- OAuth -------------------------------------------------------------------------------------------------


def _client_id(call: Call) -> str | None:
    header = call.request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            return base64.b64decode(header[6:]).decode().partition(":")[0] or None
        except ValueError:
            return None
    form = call.payload if isinstance(call.payload, dict) else {}
    return form.get("client_id") or None


def _pkce_ok(code: AuthCode, verifier: str | None) -> bool:
    if code.challenge is None:
        return True
    if not verifier:
        return False
    if code.method == "plain":
        return secrets.compare_digest(verifier, code.challenge)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return secrets.compare_digest(digest, code.challenge)


def make_oauth_handlers(fake: FakeX) -> list[Route]:
    async def authorize(call: Call) -> Response:
        q = call.request.query_params
        missing = [p for p in ("response_type", "client_id", "redirect_uri", "state") if not q.get(p)]
        if missing or q.get("response_type") != "code":
            return PlainTextResponse(f"Invalid authorize request: missing {missing}", 400)
        with fake._lock:
            user_id = fake.authorize_as
        if user_id is None:
            user_id = fake.register_account(username="postwright_sandbox", name="Sandbox User").user_id
        code = secrets.token_urlsafe(24)
        fake.codes[code] = AuthCode(
            user_id=user_id,
            redirect_uri=q["redirect_uri"],
            challenge=q.get("code_challenge"),
            method=q.get("code_challenge_method", "plain"),
            scope=q.get("scope", DEFAULT_SCOPE),
            expires_at=fake.now() + timedelta(seconds=CODE_TTL),
        )
        sep = "&" if "?" in q["redirect_uri"] else "?"
        return RedirectResponse(f"{q['redirect_uri']}{sep}{urlencode({'state': q['state'], 'code': code})}")

    async def token(call: Call) -> Response:
        failure = await fake.gate(call, [])
        if failure is not None and failure.kind != "answer_lost":
            return fake.failure_response(failure, call.op)
        if _client_id(call) is None:
            return oauth_error("Missing valid authorization header", "unauthorized_client", 401)
        form = call.payload if isinstance(call.payload, dict) else {}
        grant = form.get("grant_type")
        if grant == "authorization_code":
            answer = _exchange_code(fake, form)
        elif grant == "refresh_token":
            answer = _rotate_refresh(fake, str(form.get("refresh_token", "")))
        else:
            answer = oauth_error("Value passed for the grant type was invalid.")
        return fake.lost_answer(failure, call.op) if failure is not None else answer

    async def revoke(call: Call) -> Response:
        form = call.payload if isinstance(call.payload, dict) else {}
        with fake._lock:
            info = fake.access_tokens.get(str(form.get("token", "")))
            if info:
                info.revoked = True
            fake.refresh_tokens.pop(str(form.get("token", "")), None)
        return JSONResponse({"revoked": True})

    return [
        Route("/i/oauth2/authorize", endpoint(fake, "oauth.authorize", authorize), methods=["GET"]),
        Route("/2/oauth2/token", endpoint(fake, "oauth.token", token), methods=["POST"]),
        Route("/2/oauth2/revoke", endpoint(fake, "oauth.revoke", revoke), methods=["POST"]),
    ]


def _exchange_code(fake: FakeX, form: dict[str, str]) -> Response:
    with fake._lock:
        code = fake.codes.pop(form.get("code", ""), None)
    invalid = oauth_error("Value passed for the authorization code was invalid.")
    if code is None or code.expires_at <= fake.now() or code.redirect_uri != form.get("redirect_uri"):
        return invalid
    if not _pkce_ok(code, form.get("code_verifier")):
        return invalid
    return JSONResponse(fake.issue_tokens(code.user_id))


def _rotate_refresh(fake: FakeX, refresh_token: str) -> Response:
    with fake._lock:
        user_id = fake.refresh_tokens.pop(refresh_token, None)
        if user_id is None and refresh_token not in fake.spent_refresh_tokens:
            auto = fake._auto_account(refresh_token)  # sandbox refresh tokens, first use only
            user_id = auto.user_id if auto else None
            fake.access_tokens.pop(refresh_token, None)
        if user_id is None:
            return oauth_error("Value passed for the token was invalid.")
        fake.spent_refresh_tokens.add(refresh_token)
    return JSONResponse(fake.issue_tokens(user_id))


def create_x_app(
    *, auto_accept_prefixes: tuple[str, ...] = ("fake-", "sandbox-"), seed: int | None = None
) -> Starlette:
    """The fake X server; its state is `app.state.fake` (a `FakeX`)."""
    fake = FakeX(auto_accept_prefixes=auto_accept_prefixes, seed=seed)
    routes = [
        *make_oauth_handlers(fake),
        *make_handlers(fake),
        *make_media_handlers(fake),
        *admin_routes(fake),
    ]
    # Every post of a burst is one POST /2/tweets.
    hot = {("POST", r.path): r.endpoint for r in routes if r.path == "/2/tweets" and "POST" in (r.methods or ())}
    app = FakeApp(routes=routes, hot=hot)
    app.state.fake = fake
    return app
