"""Fake Bluesky PDS: the XRPC calls postwright makes, with the PDS's own answers and refusals.

Serves createSession / refreshSession (rotation with a grace window) / getSession, uploadBlob,
createRecord, putRecord (with the measured `swapRecord: null` semantics: create, identical again → 200
no-op, other content → 400 InvalidSwap), getRecord (no auth; 400 RecordNotFound), deleteRecord,
app.bsky.actor.getProfile and com.atproto.identity.resolveHandle. Post records are validated the way the
PDS lexicon check does (≤ 300 graphemes / 3000 bytes, facets inside the text, ≤ 4 images, blob size and
type, reply refs, createdAt).

Accounts are registered with `register_account(...)` / `POST /_fake/accounts`. For sandbox friendliness
createSession also accepts any handle with an app password starting with `fake-` or `sandbox-` and
creates that account on the fly (`create_bluesky_app(auto_accept_prefixes=())` turns it off).
The didDoc returned by sessions points at this server, so clients keep talking to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from postwright.publishing.platforms.base import split_graphemes
from postwright.publishing.platforms.bluesky import BLUESKY_SETTINGS, TID_PATTERN, new_tid
from postwright.testing.fakes.common import (
    FAILURE_KINDS,
    Call,
    FakePlatform,
    FakePost,
    ScriptedFailure,
    admin_routes,
    endpoint,
)

POST = "app.bsky.feed.post"
_HANDLE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_RECORD_PREFIX = f"Invalid {POST} record: "
_FACET_TYPES = {
    "app.bsky.richtext.facet#link": "uri",
    "app.bsky.richtext.facet#mention": "did",
    "app.bsky.richtext.facet#tag": "tag",
}


def xrpc_error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status, headers=headers)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _cid(prefix: str, data: bytes) -> str:
    return prefix + base64.b32encode(hashlib.sha256(data).digest()).decode().lower().rstrip("=")


def record_cid(value: Any) -> str:
    """Content id of a record: identical records, identical CID (what makes putRecord a no-op)."""
    return _cid("bafyrei", json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


@dataclass
class BskyAccount:
    did: str
    handle: str
    passwords: set[str]
    display_name: str | None = None
    avatar: str | None = None
    email: str | None = None
    status: str | None = None  # None | "takendown" | "deactivated"


@dataclass
class TokenState:
    did: str
    exp: datetime
    next: str | None = None  # refresh tokens: the token issued when this one was used


@dataclass
class Blob:
    cid: str
    owner: str
    mime_type: str
    size: int


@dataclass
class StoredRecord:
    uri: str
    cid: str
    value: dict[str, Any]
    rev: str = field(default_factory=lambda: secrets.token_hex(7))


class FakeBluesky(FakePlatform):
    platform = "BLUESKY"
    create_ops = frozenset({"com.atproto.repo.putRecord", "com.atproto.repo.createRecord"})
    supported_kinds = FAILURE_KINDS - {"duplicate", "stuck_processing"}  # Bluesky has neither

    def __init__(self, *, auto_accept_prefixes: tuple[str, ...] = ("fake-", "sandbox-"), seed: int | None = None):
        super().__init__(seed=seed)
        self.auto_accept_prefixes = auto_accept_prefixes
        self.access_ttl = timedelta(hours=2)
        self.refresh_ttl = timedelta(days=90)
        self.refresh_grace = timedelta(hours=2)
        self.image_max_bytes = BLUESKY_SETTINGS.image_max_bytes
        self.video_max_bytes = 300_000_000
        self.upload_max_bytes = 52_428_800
        self.pds_url: str | None = None  # didDoc endpoint; default: the URL the request came in on
        self._init_state()

    def _init_state(self) -> None:
        self.accounts: dict[str, BskyAccount] = {}
        self.handles: dict[str, str] = {}  # handle -> DID, including handles of other servers
        self.access: dict[str, TokenState] = {}
        self.refresh: dict[str, TokenState] = {}
        self.blobs: dict[str, Blob] = {}
        self.records: dict[tuple[str, str, str], StoredRecord] = {}

    def reset(self, *, accounts: bool = False) -> None:
        super().reset(accounts=accounts)
        with self._lock:
            self.blobs.clear()
            self.records.clear()
            if accounts:
                self._init_state()

    # -- accounts --------------------------------------------------------------------------------------
    def register_account(
        self,
        *,
        handle: str,
        password: str,
        did: str | None = None,
        display_name: str | None = None,
        avatar: str | None = None,
    ) -> BskyAccount:
        """Create an account, or replace the app passwords of an existing one (revokes the old)."""
        handle = handle.lower()
        with self._lock:
            did = did or self.handles.get(handle) or "did:plc:" + _cid("", handle.encode())[:24]
            account = self.accounts.get(did)
            if account is None:
                account = BskyAccount(did=did, handle=handle, passwords=set(), display_name=display_name)
                account.avatar = avatar or f"https://cdn.bsky.app/img/avatar/plain/{did}/fake@jpeg"
                self.accounts[did] = account
            account.passwords = {password}
            self.handles[handle] = did
            return account

    def register_handle(self, handle: str, did: str) -> None:
        """Make a handle of another server resolvable (for mention facets)."""
        with self._lock:
            self.handles[handle.lower()] = did

    def revoke_app_passwords(self, did_or_handle: str) -> None:
        account = self.find_account(did_or_handle)
        if account is not None:
            account.passwords.clear()

    def find_account(self, identifier: str) -> BskyAccount | None:
        ident = identifier.lower().lstrip("@")
        with self._lock:
            did = identifier if identifier.startswith("did:") else self.handles.get(ident)
            found = self.accounts.get(did or "")
            return found or next((a for a in self.accounts.values() if a.email and a.email == ident), None)

    def register_account_json(self, data: dict[str, Any]) -> dict[str, Any]:
        if "did" in data and "password" not in data:
            self.register_handle(str(data["handle"]), str(data["did"]))
            return {"handle": data["handle"], "did": data["did"]}
        account = self.register_account(
            handle=str(data["handle"]),
            password=str(data["password"]),
            did=data.get("did"),
            display_name=data.get("display_name"),
        )
        return {"did": account.did, "handle": account.handle}

    def list_accounts_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"did": a.did, "handle": a.handle, "status": a.status} for a in self.accounts.values()]

    def account_keys_of(self, account: str) -> list[str]:
        found = self.accounts.get(account)
        return [account, found.handle] if found else [account]

    def expire_token(self, token: str) -> bool:
        with self._lock:
            state = self.access.get(token) or self.refresh.get(token)
            if state is None:
                return False
            state.exp = self.now() - timedelta(seconds=1)
            return True

    # -- sessions --------------------------------------------------------------------------------------
    def _jwt(self, did: str, ttl: timedelta, kind: str) -> str:
        now = self.now()
        header = {"typ": "at+jwt" if kind == "access" else "refresh+jwt", "alg": "HS256"}
        claims = {
            "scope": "com.atproto.appPass" if kind == "access" else "com.atproto.refresh",
            "sub": did,
            "aud": "did:web:fake.pds",
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            "jti": secrets.token_hex(12),
        }
        parts = [json.dumps(header).encode(), json.dumps(claims).encode(), secrets.token_bytes(32)]
        return ".".join(_b64url(p) for p in parts)

    def issue_access(self, did: str) -> str:
        token = self._jwt(did, self.access_ttl, "access")
        self.access[token] = TokenState(did, self.now() + self.access_ttl)
        return token

    def issue_refresh(self, did: str) -> str:
        token = self._jwt(did, self.refresh_ttl, "refresh")
        self.refresh[token] = TokenState(did, self.now() + self.refresh_ttl)
        return token

    def session_json(self, account: BskyAccount, request: Request, access: str, refresh: str) -> dict[str, Any]:
        pds = self.pds_url or _own_url(request)
        did_doc = {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": account.did,
            "alsoKnownAs": [f"at://{account.handle}"],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds}],
        }
        body: dict[str, Any] = {
            "accessJwt": access,
            "refreshJwt": refresh,
            "handle": account.handle,
            "did": account.did,
        }
        body.update(didDoc=did_doc, email=account.email, emailConfirmed=True, active=account.status is None)
        if account.status:
            body["status"] = account.status
        return body

    # -- answers ---------------------------------------------------------------------------------------
    def failure_response(self, failure: ScriptedFailure, op: str) -> Response:
        kind = failure.kind
        if kind == "rate_limited":
            reset = int((self.now() + timedelta(seconds=failure.retry_after)).timestamp())
            headers = {
                "RateLimit-Limit": "5000",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(reset),
                "RateLimit-Policy": "5000;w=3600",
            }
            if failure.with_retry_after:
                headers["Retry-After"] = str(failure.retry_after)
            return xrpc_error(429, "RateLimitExceeded", failure.message or "Rate Limit Exceeded", headers)
        if kind == "server_error":
            status = failure.status or 500
            names = {500: "InternalServerError", 502: "UpstreamFailure", 504: "UpstreamTimeout"}
            return xrpc_error(
                status, names.get(status, "InternalServerError"), failure.message or "Internal Server Error"
            )
        if kind == "unauthorized":
            return xrpc_error(400, "ExpiredToken", failure.message or "Token has expired")
        if kind == "media_rejected":
            message = f"{_RECORD_PREFIX}blob too big (maximum 1000000, got 1100066) at $.record.embed.images[0].image"
            return xrpc_error(400, "InvalidRequest", failure.message or message)
        message = f"{_RECORD_PREFIX}grapheme too big (maximum 300, got 301) at $.record.text"
        return xrpc_error(400, "InvalidRequest", failure.message or message)


# -- record validation (what the PDS lexicon check refuses) -------------------------------------------------


def _check_text(record: dict[str, Any]) -> str | None:
    text = record.get("text")
    if not isinstance(text, str):
        return 'Record must have the property "text"'
    graphemes, size = len(split_graphemes(text)), len(text.encode("utf-8"))
    if graphemes > BLUESKY_SETTINGS.max_graphemes:
        return f"grapheme too big (maximum {BLUESKY_SETTINGS.max_graphemes}, got {graphemes}) at $.record.text"
    if size > BLUESKY_SETTINGS.max_text_bytes:
        return f"string too big (maximum {BLUESKY_SETTINGS.max_text_bytes}, got {size}) at $.record.text"
    created = record.get("createdAt")
    if not isinstance(created, str):
        return 'Record must have the property "createdAt"'
    if not _DATETIME.match(created):
        return "Record/createdAt must be an valid atproto datetime (both RFC-3339 and ISO-8601)"
    langs = record.get("langs") or []
    if len(langs) > BLUESKY_SETTINGS.max_langs:
        return f"array too big (maximum {BLUESKY_SETTINGS.max_langs}, got {len(langs)}) at $.record.langs"
    return None


def _check_facets(record: dict[str, Any]) -> str | None:
    size = len(str(record.get("text", "")).encode("utf-8"))
    for i, facet in enumerate(record.get("facets") or []):
        path = f"$.record.facets[{i}]"
        index = facet.get("index") if isinstance(facet, dict) else None
        start, end = (index or {}).get("byteStart"), (index or {}).get("byteEnd")
        if not isinstance(start, int) or not isinstance(end, int):
            return f'Record/facets/{i}/index must have the properties "byteStart" and "byteEnd"'
        if not 0 <= start < end <= size:
            return f"facet byte range {start}..{end} outside the text ({size} bytes) at {path}.index"
        features = facet.get("features")
        if not isinstance(features, list) or not features:
            return f"{path}.features must be a non-empty array"
        for feature in features:
            wanted = _FACET_TYPES.get(str(feature.get("$type")))
            if wanted is None or not isinstance(feature.get(wanted), str) or not feature[wanted]:
                return f"{path}.features has an invalid feature"
            if wanted == "did" and not feature["did"].startswith("did:"):
                return f"{path}.features mention must carry a DID"
    return None


def _check_reply(record: dict[str, Any]) -> str | None:
    reply = record.get("reply")
    if reply is None:
        return None
    for part in ("root", "parent"):
        ref = reply.get(part) if isinstance(reply, dict) else None
        if not isinstance(ref, dict) or not str(ref.get("uri", "")).startswith("at://") or not ref.get("cid"):
            return f'Record/reply/{part} must have the properties "uri" and "cid"'
    return None


def _check_blob(fake: FakeBluesky, did: str, blob: Any, path: str, kind: str) -> tuple[str, str] | None:
    link = ((blob or {}).get("ref") or {}).get("$link") if isinstance(blob, dict) else None
    stored = fake.blobs.get(str(link))
    if stored is None or stored.owner != did:
        return "BlobNotFound", f"Could not find blob: {link}"
    limit = fake.video_max_bytes if kind == "video" else fake.image_max_bytes
    accepted = "video/mp4" if kind == "video" else "image/"
    if not stored.mime_type.startswith(accepted):
        return "InvalidRequest", f"{_RECORD_PREFIX}Wrong type of blob: {stored.mime_type} at {path}"
    if stored.size > limit:
        return "InvalidRequest", f"{_RECORD_PREFIX}blob too big (maximum {limit}, got {stored.size}) at {path}"
    return None


def _check_embed(fake: FakeBluesky, did: str, embed: Any) -> tuple[str, str] | None:
    if embed is None:
        return None
    kind = embed.get("$type") if isinstance(embed, dict) else None
    if kind == "app.bsky.embed.images":
        images = embed.get("images")
        if not isinstance(images, list) or not images:
            return "InvalidRequest", f"{_RECORD_PREFIX}array too small (minimum 1) at $.record.embed.images"
        if len(images) > BLUESKY_SETTINGS.max_images:
            message = f"array too big (maximum {BLUESKY_SETTINGS.max_images}, got {len(images)})"
            return "InvalidRequest", f"{_RECORD_PREFIX}{message} at $.record.embed.images"
        for i, image in enumerate(images):
            path = f"$.record.embed.images[{i}]"
            if not isinstance(image, dict) or not isinstance(image.get("alt"), str):
                return "InvalidRequest", f'{_RECORD_PREFIX}{path} must have the property "alt"'
            if bad := _check_blob(fake, did, image.get("image"), f"{path}.image", "image"):
                return bad
        return None
    if kind == "app.bsky.embed.video":
        return _check_blob(fake, did, embed.get("video"), "$.record.embed.video", "video")
    if kind == "app.bsky.embed.external":
        external = embed.get("external") or {}
        if not all(isinstance(external.get(k), str) for k in ("uri", "title", "description")):
            return "InvalidRequest", f"{_RECORD_PREFIX}$.record.embed.external needs uri, title and description"
        return None
    if kind in ("app.bsky.embed.record", "app.bsky.embed.recordWithMedia"):
        return None
    return "InvalidRequest", f"{_RECORD_PREFIX}unknown embed type {kind!r} at $.record.embed"


def validate_post_record(fake: FakeBluesky, did: str, record: Any) -> tuple[str, str] | None:
    """(error, message) the PDS would answer with 400, or None when the record is valid."""
    if not isinstance(record, dict):
        return "InvalidRequest", "Record must be an object"
    if record.get("$type") != POST:
        return "InvalidRequest", f"Invalid $type: expected {POST}, got {record.get('$type')}"
    for check in (_check_text, _check_facets, _check_reply):
        if message := check(record):
            return "InvalidRequest", _RECORD_PREFIX + message
    return _check_embed(fake, did, record.get("embed"))


# -- handlers ----------------------------------------------------------------------------------------------


async def _authorized(fake: FakeBluesky, call: Call) -> BskyAccount | Response:
    header = call.request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return xrpc_error(401, "AuthenticationRequired", "Authentication Required")
    token = header[7:].strip()
    with fake._lock:
        state = fake.access.get(token)
        if state is None:
            message = "Bad token scope" if token in fake.refresh else "Token could not be verified"
            return xrpc_error(400, "InvalidToken", message)
        if state.exp <= fake.now():
            return xrpc_error(400, "ExpiredToken", "Token has expired")
        account = fake.accounts[state.did]
    call.record.account = account.did
    failure = await fake.gate(call, [account.did, account.handle, token])
    if failure is not None and failure.kind != "answer_lost":
        return fake.failure_response(failure, call.op)
    return account


def _body(call: Call) -> dict[str, Any]:
    return call.payload if isinstance(call.payload, dict) else {}


async def create_session(fake: FakeBluesky, call: Call) -> Response:
    body = _body(call)
    identifier, password = body.get("identifier"), body.get("password")
    if not isinstance(identifier, str) or not isinstance(password, str):
        return xrpc_error(400, "InvalidRequest", 'Input must have the properties "identifier" and "password"')
    account = fake.find_account(identifier)
    sandbox = fake.auto_accept_prefixes and password.startswith(fake.auto_accept_prefixes)
    if account is None and sandbox and _HANDLE.match(identifier.lstrip("@")):
        account = fake.register_account(handle=identifier.lstrip("@"), password=password)
    keys = [account.did, account.handle] if account else [identifier]
    failure = await fake.gate(call, keys)
    if failure is not None:
        return fake.failure_response(failure, call.op)
    if account is None or password not in account.passwords:
        return xrpc_error(401, "AuthenticationRequired", "Invalid identifier or password")
    if account.status == "takendown":
        return xrpc_error(401, "AccountTakedown", "Account has been taken down")
    call.record.account = account.did
    with fake._lock:
        access, refresh = fake.issue_access(account.did), fake.issue_refresh(account.did)
    return JSONResponse(fake.session_json(account, call.request, access, refresh))


async def refresh_session(fake: FakeBluesky, call: Call) -> Response:
    header = call.request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not token:
        return xrpc_error(401, "AuthenticationRequired", "Authentication Required")
    failure = await fake.gate(call, [])
    if failure is not None:
        return fake.failure_response(failure, call.op)
    with fake._lock:
        state = fake.refresh.get(token)
        if state is None:
            return xrpc_error(400, "InvalidToken", "Token could not be verified")
        if state.exp <= fake.now():
            return xrpc_error(400, "ExpiredToken", "Token has expired")
        if state.next is None:
            # Rotation: a new refresh token; the used one lives on only for the grace window, during
            # which re-using it yields the same next token (a lost answer can be retried).
            state.next = fake.issue_refresh(state.did)
            state.exp = min(state.exp, fake.now() + fake.refresh_grace)
        account = fake.accounts[state.did]
        access = fake.issue_access(state.did)
    call.record.account = account.did
    return JSONResponse(fake.session_json(account, call.request, access, state.next))


async def get_session(fake: FakeBluesky, call: Call) -> Response:
    account = await _authorized(fake, call)
    if isinstance(account, Response):
        return account
    pds = fake.pds_url or _own_url(call.request)
    body: dict[str, Any] = {
        "handle": account.handle,
        "did": account.did,
        "email": account.email,
        "emailConfirmed": True,
    }
    body.update(active=account.status is None, didDoc={"id": account.did, "service": [{"serviceEndpoint": pds}]})
    return JSONResponse(body)


async def upload_blob(fake: FakeBluesky, call: Call) -> Response:
    account = await _authorized(fake, call)
    if isinstance(account, Response):
        return account
    if len(call.raw) > fake.upload_max_bytes:
        return xrpc_error(413, "PayloadTooLarge", "request entity too large")
    mime = call.request.headers.get("content-type", "").split(";")[0].strip() or "application/octet-stream"
    blob = Blob(_cid("bafkrei", call.raw), account.did, mime, len(call.raw))
    fake.blobs[blob.cid] = blob
    return JSONResponse({"blob": {"$type": "blob", "ref": {"$link": blob.cid}, "mimeType": mime, "size": blob.size}})


def _write_target(fake: FakeBluesky, account: BskyAccount, body: dict[str, Any]) -> tuple[str, str] | Response:
    repo, collection = str(body.get("repo", "")), body.get("collection")
    if repo not in (account.did, account.handle):
        return xrpc_error(400, "InvalidRequest", "Invalid repo: the session does not own it")
    if collection != POST:
        return xrpc_error(400, "InvalidRequest", f"Lexicon not supported by this fake: {collection}")
    problem = validate_post_record(fake, account.did, body.get("record"))
    if problem is not None:
        return xrpc_error(400, *problem)
    return account.did, POST


def _store(fake: FakeBluesky, did: str, rkey: str, record: dict[str, Any]) -> StoredRecord:
    uri = f"at://{did}/{POST}/{rkey}"
    stored = StoredRecord(uri=uri, cid=record_cid(record), value=record)
    with fake._lock:
        replaced = (did, POST, rkey) in fake.records
        fake.records[(did, POST, rkey)] = stored
    existing = fake.find_post(uri)
    if replaced and existing is not None:
        existing.text, existing.body = record.get("text", ""), record
        return stored
    reply_to = ((record.get("reply") or {}).get("parent") or {}).get("uri")
    embed = record.get("embed") or {}
    blobs = [i["image"]["ref"]["$link"] for i in embed.get("images", [])]
    if "video" in embed:
        blobs.append(embed["video"]["ref"]["$link"])
    fake.add_post(FakePost(uri, did, record.get("text", ""), fake.now(), record, reply_to, blobs))
    return stored


def _written(fake: FakeBluesky, call: Call, stored: StoredRecord, *, commit: bool = True) -> Response:
    if call.record.scripted == "answer_lost":
        return fake.lost_answer(call.failure, call.op)
    body: dict[str, Any] = {"uri": stored.uri, "cid": stored.cid}
    if commit:
        body["commit"] = {"cid": _cid("bafyrei", stored.rev.encode()), "rev": stored.rev}
    body["validationStatus"] = "valid"
    return JSONResponse(body)


async def create_record(fake: FakeBluesky, call: Call) -> Response:
    account = await _authorized(fake, call)
    if isinstance(account, Response):
        return account
    body = _body(call)
    target = _write_target(fake, account, body)
    if isinstance(target, Response):
        return target
    rkey = str(body.get("rkey") or new_tid())
    if not TID_PATTERN.match(rkey):
        return xrpc_error(400, "InvalidRequest", "Invalid record key")
    if (account.did, POST, rkey) in fake.records:
        # Measured: the repo tree refuses the duplicate key and the PDS answers a bare 500.
        return xrpc_error(500, "InternalServerError", "Internal Server Error")
    return _written(fake, call, _store(fake, account.did, rkey, body["record"]))


async def put_record(fake: FakeBluesky, call: Call) -> Response:
    account = await _authorized(fake, call)
    if isinstance(account, Response):
        return account
    body = _body(call)
    target = _write_target(fake, account, body)
    if isinstance(target, Response):
        return target
    rkey = str(body.get("rkey", ""))
    if not TID_PATTERN.match(rkey):
        return xrpc_error(400, "InvalidRequest", "Invalid record key")
    existing = fake.records.get((account.did, POST, rkey))
    if "swapRecord" in body:
        swap, new_cid = body["swapRecord"], record_cid(body["record"])
        if swap is None and existing is not None and existing.cid == new_cid:
            return _written(fake, call, existing, commit=False)  # identical record: no-op
        if (swap is None and existing is not None) or (swap is not None and (existing is None or existing.cid != swap)):
            return xrpc_error(400, "InvalidSwap", f"Record was at {existing.cid if existing else 'null'}")
    return _written(fake, call, _store(fake, account.did, rkey, body["record"]))


async def get_record(fake: FakeBluesky, call: Call) -> Response:
    q = call.request.query_params
    account = fake.find_account(q.get("repo", ""))
    if account is None:
        return xrpc_error(400, "InvalidRequest", f"Could not find repo: {q.get('repo')}")
    call.record.account = account.did
    failure = await fake.gate(call, [account.did, account.handle])
    if failure is not None and failure.kind != "answer_lost":
        return fake.failure_response(failure, call.op)
    collection, rkey = q.get("collection", ""), q.get("rkey", "")
    stored = fake.records.get((account.did, collection, rkey))
    if stored is None or (q.get("cid") and q.get("cid") != stored.cid):
        return xrpc_error(400, "RecordNotFound", f"Could not locate record: at://{account.did}/{collection}/{rkey}")
    return JSONResponse({"uri": stored.uri, "cid": stored.cid, "value": stored.value})


async def delete_record(fake: FakeBluesky, call: Call) -> Response:
    account = await _authorized(fake, call)
    if isinstance(account, Response):
        return account
    body = _body(call)
    key = (account.did, str(body.get("collection", "")), str(body.get("rkey", "")))
    with fake._lock:
        stored = fake.records.pop(key, None)
    if stored is not None and (post := fake.find_post(stored.uri)) is not None:
        post.deleted = True
    return JSONResponse({"commit": {"cid": _cid("bafyrei", secrets.token_bytes(8)), "rev": secrets.token_hex(7)}})


async def get_profile(fake: FakeBluesky, call: Call) -> Response:
    viewer = await _authorized(fake, call)
    if isinstance(viewer, Response):
        return viewer
    actor = fake.find_account(call.request.query_params.get("actor", ""))
    if actor is None:
        return xrpc_error(400, "InvalidRequest", "Profile not found")
    posts = sum(1 for p in fake.posts(account=actor.did))
    body: dict[str, Any] = {
        "did": actor.did,
        "handle": actor.handle,
        "displayName": actor.display_name,
        "avatar": actor.avatar,
    }
    body.update(followersCount=0, followsCount=0, postsCount=posts)
    return JSONResponse({k: v for k, v in body.items() if v is not None})


async def resolve_handle(fake: FakeBluesky, call: Call) -> Response:
    handle = call.request.query_params.get("handle", "").lower()
    failure = await fake.gate(call, [handle])
    if failure is not None and failure.kind != "answer_lost":
        return fake.failure_response(failure, call.op)
    did = fake.handles.get(handle)
    if did is None:
        return xrpc_error(400, "InvalidRequest", "Unable to resolve handle")
    return JSONResponse({"did": did})


_PROCEDURES = {
    "com.atproto.server.createSession": create_session,
    "com.atproto.server.refreshSession": refresh_session,
    "com.atproto.repo.uploadBlob": upload_blob,
    "com.atproto.repo.createRecord": create_record,
    "com.atproto.repo.putRecord": put_record,
    "com.atproto.repo.deleteRecord": delete_record,
}
_QUERIES = {
    "com.atproto.server.getSession": get_session,
    "com.atproto.repo.getRecord": get_record,
    "app.bsky.actor.getProfile": get_profile,
    "com.atproto.identity.resolveHandle": resolve_handle,
}


def create_bluesky_app(
    *, auto_accept_prefixes: tuple[str, ...] = ("fake-", "sandbox-"), seed: int | None = None
) -> Starlette:
    """The fake PDS; its state is `app.state.fake` (a `FakeBluesky`)."""
    fake = FakeBluesky(auto_accept_prefixes=auto_accept_prefixes, seed=seed)

    async def dispatch(call: Call) -> Response:
        table = _PROCEDURES if call.request.method == "POST" else _QUERIES
        handler = table.get(call.op)
        if handler is None:
            other = _QUERIES if call.request.method == "POST" else _PROCEDURES
            if call.op in other:
                return xrpc_error(400, "InvalidRequest", f"Incorrect HTTP method ({call.request.method}) expected")
            return xrpc_error(501, "MethodNotImplemented", "Method Not Implemented")
        return await handler(fake, call)

    def nsid_of(request: Request) -> str:
        return str(request.path_params["nsid"])

    routes = [Route("/xrpc/{nsid}", endpoint(fake, nsid_of, dispatch), methods=["GET", "POST"]), *admin_routes(fake)]
    app = Starlette(routes=routes)
    app.state.fake = fake
    return app


def _own_url(request: Request) -> str:
    """This PDS's URL as clients reach it, including the prefix it is mounted under (sandbox mode)."""
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}".rstrip("/")
