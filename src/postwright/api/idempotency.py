"""`Idempotency-Key` on every POST: the first response is stored and replayed for the same key.

Scope is the API key (by hash) plus the workspace header, so two tenants never share keys. The same key
with a different request (method, path, query or body) answers 422 IDEMPOTENCY_KEY_REUSED; a key whose
first request is still running answers 409. Only 2xx responses are kept: a failed request may be retried
with the same key. The request's own transaction marks the record committed, so a request that took
effect but whose response was never stored (the process died in between) is answered 409, never run
twice. Records expire after `idempotency_ttl_hours`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postwright.api.errors import error_body
from postwright.db.models import IdempotencyRecord
from postwright.kit.clock import utcnow

# Longer than any request may run (media ingest fetches several URLs), so a client retry never runs
# beside a first request that is still working.
IN_PROGRESS_LOCK = timedelta(minutes=15)
MAX_KEY_LENGTH = 255
CLAIM_STATE = "idempotency_claim"


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, sessionmaker: async_sessionmaker[AsyncSession], ttl_hours: int) -> None:
        self.app = app
        self.sessionmaker = sessionmaker
        self.ttl = timedelta(hours=ttl_hours)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        key = headers.get(b"idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id", "")
        key_text = key.decode("latin-1").strip()
        if not key_text or len(key_text) > MAX_KEY_LENGTH:
            await _send_json(
                send,
                400,
                error_body(
                    400,
                    "VALIDATION_FAILED",
                    f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters.",
                    request_id,
                ),
            )
            return

        body, replay_receive = await _buffer_body(receive)
        credential = _raw_key(headers)
        workspace = headers.get(b"x-workspace-id", b"")
        scope_id = hashlib.sha256(credential + b"|" + workspace).hexdigest()[:48]
        request_hash = hashlib.sha256(
            b"|".join([scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()

        # The owner token ties the record to this request: a later takeover is not undone by our finish.
        owner = uuid.uuid4().hex
        claimed = await self._claim(scope_id, key_text, request_hash, request_id, owner)
        if isinstance(claimed, tuple):
            status, payload, extra_headers = claimed
            await _send_json(send, status, payload, extra_headers)
            return

        # The request's session marks the record committed in its own transaction (see mark_committed).
        scope.setdefault("state", {})[CLAIM_STATE] = (claimed, owner)
        captured: dict[str, Any] = {"status": None, "headers": [], "body": b""}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            await self._finish(claimed, owner, captured)

    async def _claim(
        self, scope_id: str, key: str, request_hash: str, request_id: str, owner: str
    ) -> int | tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope_id,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.created_at < now - self.ttl,
                )
            )
            inserted = await session.scalar(
                insert(IdempotencyRecord)
                .values(
                    owner=owner,
                    scope=scope_id,
                    key=key,
                    request_hash=request_hash,
                    created_at=now,
                    locked_until=now + IN_PROGRESS_LOCK,
                )
                .on_conflict_do_nothing(index_elements=["scope", "key"])
                .returning(IdempotencyRecord.id)
            )
            if inserted is not None:
                return int(inserted)
            record = await session.scalar(
                select(IdempotencyRecord)
                .where(IdempotencyRecord.scope == scope_id, IdempotencyRecord.key == key)
                .with_for_update()
            )
            assert record is not None
            if record.request_hash != request_hash:
                return (
                    422,
                    error_body(
                        422,
                        "IDEMPOTENCY_KEY_REUSED",
                        "This Idempotency-Key was already used with a different request.",
                        request_id,
                    ),
                    [],
                )
            if record.status_code is not None:
                stored_headers = [(k.encode(), v.encode()) for k, v in json.loads(record.response_headers or "[]")]
                return (
                    record.status_code,
                    json.loads(record.response_body or b"null"),
                    [*stored_headers, (b"idempotent-replayed", b"true")],
                )
            if record.committed_at is not None:
                return (
                    409,
                    error_body(
                        409,
                        "CONFLICT",
                        "The first request with this Idempotency-Key took effect, but its response was lost; "
                        "look the result up instead of retrying.",
                        request_id,
                    ),
                    [],
                )
            if record.locked_until and record.locked_until > now:
                return (
                    409,
                    error_body(
                        409,
                        "CONFLICT",
                        "A request with this Idempotency-Key is still in progress.",
                        request_id,
                    ),
                    [],
                )
            # The first request died without an answer: this one takes over.
            record.locked_until = now + IN_PROGRESS_LOCK
            record.request_hash = request_hash
            record.owner = owner
            return record.id

    async def _finish(self, record_id: int, owner: str, captured: dict[str, Any]) -> None:
        status = captured["status"]
        async with self.sessionmaker() as session, session.begin():
            if status is not None and 200 <= status < 300:
                kept = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in captured["headers"]
                    if k.lower() in (b"location",)
                ]
                await session.execute(
                    update(IdempotencyRecord)
                    .where(IdempotencyRecord.id == record_id, IdempotencyRecord.owner == owner)
                    .values(
                        status_code=status,
                        response_body=captured["body"],
                        response_headers=json.dumps(kept),
                        locked_until=None,
                    )
                )
            else:
                owned = (IdempotencyRecord.id == record_id, IdempotencyRecord.owner == owner)
                # A failed answer frees the key for a retry, unless the request's change committed anyway
                # (e.g. the connection dropped after COMMIT): then the key stays taken.
                await session.execute(delete(IdempotencyRecord).where(*owned, IdempotencyRecord.committed_at.is_(None)))
                await session.execute(update(IdempotencyRecord).where(*owned).values(locked_until=None))


async def mark_committed(session: AsyncSession, state: dict[str, Any]) -> None:
    """Record, in the caller's transaction, that the request holding this key is about to take effect."""
    claim = state.get(CLAIM_STATE)
    if claim is None:
        return
    record_id, owner = claim
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record_id, IdempotencyRecord.owner == owner)
        .values(committed_at=utcnow())
    )


def _raw_key(headers: dict[bytes, bytes]) -> bytes:
    """The API key itself, whichever header carries it, so both spellings share one key space."""
    authorization = headers.get(b"authorization", b"")
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and value.strip():
        return value.strip()
    return headers.get(b"x-api-key", b"").strip()


async def _buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _send_json(
    send: Send, status: int, payload: Any, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra_headers or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
