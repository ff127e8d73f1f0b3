"""Bluesky (AT Protocol) adapter: records on the account's own PDS, created exactly once.

Decisions (shared/reference/platforms/x-bluesky-pinterest.md §2):
- Auth is an app-password session (createSession / refreshSession) on the account's PDS; the PDS URL
  comes from the account (`serviceUrl`, then the session's didDoc), never from AdapterContext.base_url.
  publish() never logs in: without a live accessJwt it raises ReauthRequired and refresh() renews it.
- The record key (TID) is chosen by prepare() and stored before sending. publish() is
  `putRecord` with `"swapRecord": null` at that key: it creates, answers 200 again for the identical
  record and 400 InvalidSwap for other content, so a re-send can never make a second post. `createdAt`
  is derived from the TID so a re-send is byte-identical. lookup() is `getRecord` by that key.
- Links, mentions and hashtags become facets with UTF-8 byte offsets; a mention whose handle does not
  resolve stays plain text.
- Video uses the simple path (uploadBlob to the PDS, then an app.bsky.embed.video), not video.bsky.app.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

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
class BlueskySettings:
    """Every Bluesky number that may change, in one place."""

    default_service_url: str = "https://bsky.social"
    public_base_url: str = "https://bsky.app"
    post_collection: str = "app.bsky.feed.post"
    max_graphemes: int = 300
    max_text_bytes: int = 3000
    max_images: int = 4
    # The current lexicon allows 2,000,000, but PDSes on older code (measured: 0.4.217) refuse over
    # 1,000,000 at post time although uploadBlob accepted the blob.
    image_max_bytes: int = 1_000_000
    # Simple video path: the PDS caps one uploadBlob at 50 MB (the lexicon itself allows 300 MB).
    video_max_bytes: int = 52_428_800
    max_langs: int = 3
    tag_max_graphemes: int = 64
    tag_max_bytes: int = 640
    # Renew the session this long before the accessJwt's `exp` instead of sending a doomed request.
    session_margin_seconds: int = 30


BLUESKY_SETTINGS = BlueskySettings()
_ACCOUNT_GONE = frozenset(
    {"AccountTakedown", "AccountDeactivated", "RepoTakendown", "RepoDeactivated", "RepoSuspended"}
)
_SESSION_ERRORS = frozenset({"ExpiredToken", "InvalidToken", "AuthenticationRequired"})

# -- record keys ------------------------------------------------------------------------------------------

TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID_PATTERN = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def new_tid(*, now_us: int | None = None, clock_id: int | None = None) -> str:
    """A record key: 53 bits of microseconds since the epoch, 10 bits of clock id, base32-sortable."""
    micros = now_us if now_us is not None else time.time_ns() // 1000
    value = (micros << 10) | (clock_id if clock_id is not None else secrets.randbelow(1024))
    chars = []
    for _ in range(13):
        chars.append(TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def tid_time(tid: str) -> datetime:
    value = 0
    for ch in tid:
        value = (value << 5) | TID_ALPHABET.index(ch)
    return datetime.fromtimestamp((value >> 10) / 1_000_000, UTC)


def created_at_for(tid: str) -> str:
    """`createdAt` derived from the record key, so every re-send carries the same record."""
    return tid_time(tid).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- text and facets --------------------------------------------------------------------------------------


def count_graphemes(text: str) -> int:
    return len(split_graphemes(text))


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class FacetSpan:
    start: int  # character offsets into the text
    end: int
    kind: str  # link | mention | tag
    value: str  # uri, handle (without @) or tag (without #)


# `(?<![^\s(\[])` = at the start of the text or after whitespace / an opening bracket.
_LINK = re.compile(r"(?<![^\s(\[])https?://[^\s<>\"]+", re.IGNORECASE)
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_MENTION = re.compile(rf"(?<![^\s(\[])@((?:{_LABEL}\.)+[a-zA-Z](?:[a-zA-Z0-9-]{{0,61}}[a-zA-Z0-9])?)")
_TAG = re.compile(r"(?<![^\s(\[])[#\uff03](?!\ufe0f|\u20e3)([^\s#\uff03]+)")
_TRAILING_LINK_PUNCT = ".,;:!?'\""


def _trim_link(url: str) -> str:
    while url and (url[-1] in _TRAILING_LINK_PUNCT or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url


def _trim_tag(tag: str) -> str:
    while tag and unicodedata.category(tag[-1]).startswith("P"):
        tag = tag[:-1]
    return tag


def find_facet_spans(text: str, settings: BlueskySettings = BLUESKY_SETTINGS) -> list[FacetSpan]:
    """Links, then mentions, then hashtags; later kinds never overlap earlier ones."""
    spans: list[FacetSpan] = []

    def add(start: int, end: int, kind: str, value: str) -> None:
        if all(end <= s.start or start >= s.end for s in spans):
            spans.append(FacetSpan(start, end, kind, value))

    for m in _LINK.finditer(text):
        url = _trim_link(m.group(0))
        if len(url) > len("https://"):
            add(m.start(), m.start() + len(url), "link", url)
    for m in _MENTION.finditer(text):
        add(m.start(), m.end(), "mention", m.group(1).lower())
    for m in _TAG.finditer(text):
        tag = _trim_tag(m.group(1))
        if not tag or tag.isdigit() or utf8_len(tag) > settings.tag_max_bytes:
            continue
        if count_graphemes(tag) <= settings.tag_max_graphemes:
            add(m.start(), m.start() + 1 + len(tag), "tag", tag)
    return sorted(spans, key=lambda s: s.start)


def build_facets(text: str, spans: list[FacetSpan], dids: dict[str, str]) -> list[dict[str, Any]]:
    """Facets with UTF-8 byte offsets; mentions without a resolved DID are left out."""
    facets = []
    for span in spans:
        if span.kind == "link":
            feature = {"$type": "app.bsky.richtext.facet#link", "uri": span.value}
        elif span.kind == "mention":
            if span.value not in dids:
                continue
            feature = {"$type": "app.bsky.richtext.facet#mention", "did": dids[span.value]}
        else:
            feature = {"$type": "app.bsky.richtext.facet#tag", "tag": span.value}
        index = {"byteStart": utf8_len(text[: span.start]), "byteEnd": utf8_len(text[: span.end])}
        facets.append({"index": index, "features": [feature]})
    return facets


# -- validation -------------------------------------------------------------------------------------------


def validate_post(post: OutboundPost, settings: BlueskySettings = BLUESKY_SETTINGS) -> list[str]:
    """Problems with `post` under Bluesky's own limits."""
    problems: list[str] = []
    graphemes, size = count_graphemes(post.text), utf8_len(post.text)
    if graphemes > settings.max_graphemes:
        problems.append(f"Text is {graphemes} characters; Bluesky allows {settings.max_graphemes}.")
    if size > settings.max_text_bytes:
        problems.append(f"Text is {size} bytes; Bluesky allows {settings.max_text_bytes}.")
    if not post.text.strip() and not post.media:
        problems.append("Bluesky needs text or media.")
    langs = post.platform_options.get("langs") or []
    if len(langs) > settings.max_langs:
        problems.append(f"Bluesky allows at most {settings.max_langs} languages per post.")
    return problems + _media_problems(post.media, settings)


def _media_problems(media: tuple[MediaFile, ...], settings: BlueskySettings) -> list[str]:
    problems: list[str] = []
    images = [m for m in media if m.kind in ("IMAGE", "GIF")]
    videos = [m for m in media if m.kind == "VIDEO"]
    if len(images) + len(videos) != len(media):
        problems.append("Bluesky accepts images or one video; documents are not supported.")
    if len(images) > settings.max_images:
        problems.append(f"Bluesky allows at most {settings.max_images} images per post.")
    if videos and (len(videos) > 1 or images):
        problems.append("A video must be the only media of a Bluesky post.")
    for i, item in enumerate(media, 1):
        limit = settings.video_max_bytes if item.kind == "VIDEO" else settings.image_max_bytes
        wanted = "video/mp4" if item.kind == "VIDEO" else "image/"
        size = item.known_size
        if size is None:
            problems.append(f"Media {i}: Bluesky needs the file bytes to upload it.")
        elif size > limit:
            problems.append(f"Media {i}: {size} bytes is over Bluesky's {limit}-byte limit.")
        if not item.mime_type.startswith(wanted):
            problems.append(f"Media {i}: Bluesky does not accept {item.mime_type} here.")
    return problems


# -- answers ----------------------------------------------------------------------------------------------


def xrpc_error(answer: HttpAnswer) -> tuple[str, str]:
    body = answer.json()
    if isinstance(body, dict):
        return str(body.get("error") or ""), str(body.get("message") or body.get("error") or "")
    return "", ""


def classify(answer: HttpAnswer, *, creates: bool, media_step: bool = False) -> PlatformError:
    """The contract outcome of a non-200 XRPC answer."""
    error, message = xrpc_error(answer)
    message = message or f"HTTP {answer.status}"
    if answer.status == 401 or error in _SESSION_ERRORS:
        return ReauthRequired(f"Bluesky session refused ({error or answer.status}).")
    if error in _ACCOUNT_GONE:
        return PermanentError("CONTENT_REJECTED", f"Bluesky account unavailable: {message}")
    if answer.status == 429:
        wait = retry_after_from(answer.headers, "RateLimit-Reset")
        return RetryableError(f"Bluesky rate limit: {message}", retry_after=wait, rate_limited=True)
    if answer.status >= 500:
        detail = f"Bluesky answered HTTP {answer.status}: {message}"
        return OutcomeUnknown(detail) if creates else RetryableError(detail)
    lowered = message.lower()
    if answer.status == 413 or error == "BlobNotFound" or (answer.status == 400 and (media_step or "blob" in lowered)):
        return PermanentError("MEDIA_REJECTED", message)
    if answer.status == 400 and "record key" in lowered:
        return PermanentError("PLATFORM_ERROR", message)
    if answer.status == 400:
        return PermanentError("CONTENT_REJECTED", message)
    return PermanentError("PLATFORM_ERROR", f"Bluesky answered HTTP {answer.status}: {message}")


def jwt_expiry(token: str) -> datetime | None:
    """The `exp` of a session JWT (read, not verified: the PDS verifies)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


def parse_at_uri(uri: str) -> tuple[str, str, str]:
    """`at://{did}/{collection}/{rkey}` → its parts."""
    parts = uri.removeprefix("at://").split("/")
    if not uri.startswith("at://") or len(parts) != 3 or not all(parts):
        raise PermanentError("VALIDATION_FAILED", f"Not a Bluesky post URI: {uri}")
    return parts[0], parts[1], parts[2]


def _pds_from_did_doc(body: dict[str, Any]) -> str | None:
    for service in (body.get("didDoc") or {}).get("service") or []:
        if isinstance(service, dict) and service.get("id") in ("#atproto_pds", "atproto_pds"):
            return str(service.get("serviceEndpoint") or "").rstrip("/") or None
    return None


def _service_url(creds: Credentials, settings: BlueskySettings) -> str:
    return str(creds.extra.get("serviceUrl") or settings.default_service_url).rstrip("/")


def _session_credentials(body: dict[str, Any], previous: Credentials, service_url: str) -> Credentials:
    extra = {k: v for k, v in previous.extra.items() if k != "accessJwt"}
    extra.update(did=body["did"], handle=body.get("handle") or extra.get("handle"), serviceUrl=service_url)
    if pds := _pds_from_did_doc(body):
        extra["pdsUrl"] = pds  # the entryway may hand us a different PDS host for later calls
    access = str(body["accessJwt"])
    return Credentials(
        access_token=access, refresh_token=body.get("refreshJwt"), expires_at=jwt_expiry(access), extra=extra
    )


@dataclass(frozen=True)
class _Session:
    pds: str
    did: str
    handle: str | None
    access_jwt: str


# -- the adapter ------------------------------------------------------------------------------------------


class BlueskyAdapter:
    platform: ClassVar[str] = "BLUESKY"

    def __init__(self, ctx: AdapterContext, settings: BlueskySettings = BLUESKY_SETTINGS) -> None:
        self.ctx = ctx  # ctx.base_url is ignored: every account names its own PDS
        self.settings = settings

    def prepare(self, post: OutboundPost) -> str | None:
        return new_tid()

    async def validate(self, post: OutboundPost) -> list[str]:
        return validate_post(post, self.settings)

    async def publish(self, creds: Credentials, post: OutboundPost) -> PublishResult:
        if post.reply_to_external_id:
            return await self.reply(creds, post)
        return await self._create(creds, post, reply=None)

    async def reply(self, creds: Credentials, post: OutboundPost) -> PublishResult:
        if not post.reply_to_external_id:
            raise ValueError("reply() needs post.reply_to_external_id")
        session = self._session(creds, post)
        refs = await self._reply_refs(session, post.reply_to_external_id)
        return await self._create(creds, post, reply=refs)

    async def lookup(self, creds: Credentials, post: OutboundPost) -> PublishResult | None:
        if not post.idempotency_key:
            raise OutcomeUnknown("No record key was stored for this post; Bluesky cannot be asked.")
        did = creds.extra.get("did") or post.account_external_id
        if not did:
            raise OutcomeUnknown("The account's DID is unknown; Bluesky cannot be asked.")
        pds = str(creds.extra.get("pdsUrl") or _service_url(creds, self.settings))
        return await self._find(pds, str(did), post.idempotency_key, creds, post)

    async def refresh(self, creds: Credentials) -> Credentials:
        service_url = _service_url(creds, self.settings)
        if creds.refresh_token:
            pds = str(creds.extra.get("pdsUrl") or service_url)
            headers = {"Authorization": f"Bearer {creds.refresh_token}"}
            url = f"{pds}/xrpc/com.atproto.server.refreshSession"
            answer = await send_request(self.ctx, "POST", url, creates=False, what="Bluesky refresh", headers=headers)
            if answer.status == 200:
                return _session_credentials(answer.json(), creds, service_url)
            error, message = xrpc_error(answer)
            if error in _ACCOUNT_GONE:
                raise PermanentError("AUTH_EXPIRED", f"Bluesky account unavailable: {message}")
            if answer.status == 429 or answer.status >= 500:
                raise classify(answer, creates=False)
            # An expired or revoked refresh token: fall back to the stored app password.
        return await self._login(creds, service_url)

    # -- internals ----------------------------------------------------------------------------------------
    def _session(self, creds: Credentials, post: OutboundPost) -> _Session:
        token = creds.access_token or creds.extra.get("accessJwt")
        did = creds.extra.get("did") or post.account_external_id
        if not token or not did:
            raise ReauthRequired("No Bluesky session stored for this account.")
        expiry = jwt_expiry(str(token))
        if expiry and expiry <= datetime.now(UTC) + timedelta(seconds=self.settings.session_margin_seconds):
            raise ReauthRequired("The Bluesky session has expired.")
        handle = creds.extra.get("handle") or post.account_handle.lstrip("@") or None
        pds = str(creds.extra.get("pdsUrl") or _service_url(creds, self.settings))
        return _Session(pds=pds, did=str(did), handle=handle, access_jwt=str(token))

    async def _xrpc(
        self, method: str, pds: str, nsid: str, *, token: str | None, creates: bool, what: str, **kwargs: Any
    ) -> HttpAnswer:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{pds}/xrpc/{nsid}"
        return await send_request(self.ctx, method, url, creates=creates, what=what, headers=headers, **kwargs)

    async def _create(self, creds: Credentials, post: OutboundPost, reply: dict[str, Any] | None) -> PublishResult:
        rkey = post.idempotency_key
        if not rkey or not TID_PATTERN.match(rkey):
            raise ValueError("Bluesky publish needs the record key from prepare() in post.idempotency_key")
        session = self._session(creds, post)
        record: dict[str, Any] = {"$type": self.settings.post_collection, "text": post.text}
        record["createdAt"] = created_at_for(rkey)
        if facets := await self._facets(session, post.text):
            record["facets"] = facets
        if embed := await self._embed(session, post.media):
            record["embed"] = embed
        if reply:
            record["reply"] = reply
        if langs := post.platform_options.get("langs"):
            record["langs"] = list(langs)
        body = {"repo": session.did, "collection": self.settings.post_collection, "rkey": rkey, "validate": True}
        body.update(record=record, swapRecord=None)  # null swap = create only, safe to resend
        answer = await self._xrpc(
            "POST", session.pds, "com.atproto.repo.putRecord",
            token=session.access_jwt, creates=True, what="Bluesky create post", json=body,
        )  # fmt: skip
        if answer.status == 200:
            return self._result(session.handle, session.did, str(answer.json()["uri"]), rkey)
        if xrpc_error(answer)[0] == "InvalidSwap":
            # This rkey belongs to this target alone, so a record there is our earlier attempt.
            if (found := await self._find(session.pds, session.did, rkey, creds, post)) is not None:
                return found
            raise PermanentError("PLATFORM_ERROR", "Bluesky reported a conflicting record that cannot be read.")
        raise classify(answer, creates=True)

    def _result(self, handle: str | None, did: str, uri: str, rkey: str) -> PublishResult:
        url = f"{self.settings.public_base_url}/profile/{handle or did}/post/{rkey}"
        return PublishResult(external_post_id=uri, external_url=url)

    async def _get_record(self, pds: str, did: str, collection: str, rkey: str) -> HttpAnswer:
        params = {"repo": did, "collection": collection, "rkey": rkey}
        return await self._xrpc(
            "GET",
            pds,
            "com.atproto.repo.getRecord",
            token=None,
            creates=False,
            what="Bluesky get record",
            params=params,
        )

    async def _find(
        self, pds: str, did: str, rkey: str, creds: Credentials, post: OutboundPost
    ) -> PublishResult | None:
        try:
            answer = await self._get_record(pds, did, self.settings.post_collection, rkey)
        except RetryableError as exc:
            raise OutcomeUnknown(f"Could not ask Bluesky for the record: {exc.message}") from exc
        if answer.status == 200:
            handle = creds.extra.get("handle") or post.account_handle.lstrip("@") or None
            return self._result(handle, did, str(answer.json()["uri"]), rkey)
        if xrpc_error(answer)[0] == "RecordNotFound":
            return None
        raise OutcomeUnknown(f"Bluesky could not say whether the post exists (HTTP {answer.status}).")

    async def _reply_refs(self, session: _Session, parent_uri: str) -> dict[str, Any]:
        did, collection, rkey = parse_at_uri(parent_uri)
        answer = await self._get_record(session.pds, did, collection, rkey)
        if answer.status == 200:
            body = answer.json()
            parent = {"uri": body["uri"], "cid": body["cid"]}
            root = ((body.get("value") or {}).get("reply") or {}).get("root") or parent
            return {"root": root, "parent": parent}
        if xrpc_error(answer)[0] == "RecordNotFound":
            raise PermanentError("CONTENT_REJECTED", "The Bluesky post to reply to does not exist.")
        raise classify(answer, creates=False)

    async def _facets(self, session: _Session, text: str) -> list[dict[str, Any]]:
        spans = find_facet_spans(text, self.settings)
        dids: dict[str, str] = {}
        for handle in {s.value for s in spans if s.kind == "mention"}:
            if did := await self._resolve_handle(session.pds, handle):
                dids[handle] = did
        return build_facets(text, spans, dids)

    async def _resolve_handle(self, pds: str, handle: str) -> str | None:
        answer = await self._xrpc(
            "GET", pds, "com.atproto.identity.resolveHandle",
            token=None, creates=False, what="Bluesky resolve handle", params={"handle": handle},
        )  # fmt: skip
        if answer.status == 200:
            return str(answer.json().get("did") or "") or None
        if answer.status == 400:
            return None  # unknown handle: the mention stays plain text
        raise classify(answer, creates=False)

    async def _embed(self, session: _Session, media: tuple[MediaFile, ...]) -> dict[str, Any] | None:
        if not media:
            return None
        if media[0].kind == "VIDEO":
            video: dict[str, Any] = {"$type": "app.bsky.embed.video", "video": await self._upload(session, media[0])}
            if media[0].alt_text:
                video["alt"] = media[0].alt_text
            if ratio := _aspect_ratio(media[0]):
                video["aspectRatio"] = ratio
            return video
        images = []
        for item in media:
            image: dict[str, Any] = {"image": await self._upload(session, item), "alt": item.alt_text or ""}
            if ratio := _aspect_ratio(item):
                image["aspectRatio"] = ratio
            images.append(image)
        return {"$type": "app.bsky.embed.images", "images": images}

    async def _upload(self, session: _Session, item: MediaFile) -> dict[str, Any]:
        if item.data is None:
            raise PermanentError("MEDIA_REJECTED", "Bluesky needs the media bytes to upload them.")
        answer = await self._xrpc(
            "POST", session.pds, "com.atproto.repo.uploadBlob",
            token=session.access_jwt, creates=False, what="Bluesky upload",
            data=item.data, headers={"Content-Type": item.mime_type},
        )  # fmt: skip
        if answer.status != 200:
            raise classify(answer, creates=False, media_step=True)
        return dict(answer.json()["blob"])

    async def _login(self, creds: Credentials, service_url: str) -> Credentials:
        password = creds.extra.get("appPassword")
        identifier = creds.extra.get("did") or creds.extra.get("handle")
        if not password or not identifier:
            raise PermanentError("AUTH_EXPIRED", "No Bluesky app password stored; reconnect the account.")
        answer = await _create_session(self.ctx, service_url, str(identifier), str(password))
        if answer.status == 200:
            return _session_credentials(answer.json(), creds, service_url)
        if answer.status == 429 or answer.status >= 500:
            raise classify(answer, creates=False)
        _, message = xrpc_error(answer)
        raise PermanentError("AUTH_EXPIRED", f"Bluesky refused the app password: {message or answer.status}")


def _aspect_ratio(item: MediaFile) -> dict[str, int] | None:
    if item.width and item.height:
        return {"width": item.width, "height": item.height}
    return None


async def _create_session(ctx: AdapterContext, service_url: str, identifier: str, password: str) -> HttpAnswer:
    url = f"{service_url}/xrpc/com.atproto.server.createSession"
    body = {"identifier": identifier, "password": password}
    return await send_request(ctx, "POST", url, creates=False, what="Bluesky login", json=body)


# -- account import ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlueskyLogin:
    did: str
    handle: str
    display_name: str | None
    avatar: str | None
    credentials: Credentials  # session tokens + extra {did, handle, appPassword, serviceUrl, pdsUrl?}


async def verify_login(
    ctx: AdapterContext,
    *,
    identifier: str,
    app_password: str,
    service_url: str | None = None,
    settings: BlueskySettings = BLUESKY_SETTINGS,
) -> BlueskyLogin:
    """Log in with an app password and read the profile.

    Raises PermanentError('AUTH_EXPIRED') for refused credentials, PermanentError('VALIDATION_FAILED')
    for unusable input or an unreachable PDS, RetryableError when the PDS is temporarily failing.
    """
    service = (service_url or settings.default_service_url).strip().rstrip("/")
    if not service.startswith(("https://", "http://")) or not identifier.strip() or not app_password:
        raise PermanentError("VALIDATION_FAILED", "Bluesky needs a handle, an app password and an http(s) serviceUrl.")
    try:
        answer = await _create_session(ctx, service, identifier.strip().lstrip("@"), app_password)
    except RetryableError as exc:
        if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
            raise PermanentError("VALIDATION_FAILED", f"Could not reach the Bluesky PDS at {service}.") from exc
        raise
    if answer.status != 200:
        raise _login_error(answer)
    base = Credentials(extra={"appPassword": app_password, "serviceUrl": service})
    creds = _session_credentials(answer.json(), base, service)
    profile = await _profile(ctx, str(creds.extra.get("pdsUrl") or service), creds)
    return BlueskyLogin(
        did=str(creds.extra["did"]),
        handle=str(creds.extra.get("handle") or profile.get("handle") or ""),
        display_name=profile.get("displayName") or None,
        avatar=profile.get("avatar") or None,
        credentials=creds,
    )


def _login_error(answer: HttpAnswer) -> PlatformError:
    error, message = xrpc_error(answer)
    if answer.status == 429 or answer.status >= 500:
        return classify(answer, creates=False)
    if answer.status == 401 or error in _ACCOUNT_GONE:
        return PermanentError("AUTH_EXPIRED", message or "Invalid identifier or password")
    if error == "AuthFactorTokenRequired":
        return PermanentError("VALIDATION_FAILED", "This account needs a sign-in code; use an app password instead.")
    return PermanentError("VALIDATION_FAILED", message or f"Bluesky answered HTTP {answer.status}")


async def _profile(ctx: AdapterContext, pds: str, creds: Credentials) -> dict[str, Any]:
    """The profile, or {} when it cannot be read (a new account may have none yet)."""
    url = f"{pds}/xrpc/app.bsky.actor.getProfile"
    headers = {"Authorization": f"Bearer {creds.access_token}"}
    params = {"actor": str(creds.extra["did"])}
    try:
        answer = await send_request(
            ctx, "GET", url, creates=False, what="Bluesky profile", headers=headers, params=params
        )
    except RetryableError:
        return {}
    body = answer.json()
    return body if answer.status == 200 and isinstance(body, dict) else {}
