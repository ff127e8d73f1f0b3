"""Machinery every fake platform server shares: scripts, knobs, receipts and the `/_fake` admin API.

A fake decides *what the platform would answer*; this module decides *how a test bends it*:
- knobs (latency, random 5xx, random lost answers), set globally or per account;
- a one-shot queue of scripted failures per account (or global), consumed by the next matching call;
- a receipt log of every request (auth headers removed) and of every post created.

Accounts are matched by any of their keys (access token, user id, username / DID, handle), so a test can
script "the next create of @alice fails" without knowing which token the worker will use.

Everything is reachable in-process (`app.state.fake`) and over HTTP under `/_fake/...`, so tests in other
processes (worker subprocesses in chaos tests) can script and read the same fake.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

FAILURE_KINDS = frozenset(
    {
        "rate_limited",  # 429 with the platform's rate headers (+ Retry-After when asked)
        "server_error",  # 5xx before anything is processed
        "unauthorized",  # expired / revoked access token as the platform reports it
        "duplicate",  # the platform's duplicate-content refusal
        "media_rejected",  # the platform refuses the attached media
        "content_rejected",  # policy / validation refusal
        "answer_lost",  # the call is processed, then the answer never arrives
        "stuck_processing",  # media processing never finishes (platforms with async processing)
    }
)
# Other names tests may use for the same kinds.
KIND_ALIASES = {
    "created_but_answer_lost": "answer_lost",
    "429": "rate_limited",
    "500": "server_error",
    "401": "unauthorized",
    "expired_token": "unauthorized",
}
ANY_OP = "*"
# Headers never written to the receipt log: they carry secrets.
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass
class ScriptedFailure:
    """One failure the fake serves instead of (or, for answer_lost, after) the normal answer."""

    kind: str
    # Operation it applies to ("tweets.create", "com.atproto.repo.putRecord", ...); None = the fake's
    # create operations; "*" = whatever call comes next.
    op: str | None = None
    retry_after: int = 60  # rate_limited: seconds until the platform's reset
    with_retry_after: bool = False  # rate_limited: also send Retry-After (most platforms send only resets)
    status: int | None = None  # server_error: 500 (default), 502, 503, 504
    mode: str = "hang"  # answer_lost: "hang" until the client gives up, or "drop" the connection mid-answer
    hang_seconds: float = 30.0  # answer_lost/hang: after this the fake answers 504 instead
    message: str | None = None  # override the platform's message

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScriptedFailure:
        known = {f.name for f in fields(cls)}
        failure = cls(**{k: v for k, v in data.items() if k in known})
        failure.kind = KIND_ALIASES.get(str(failure.kind), str(failure.kind))
        if failure.kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {failure.kind!r}; one of {sorted(FAILURE_KINDS)}")
        if failure.mode not in ("hang", "drop"):
            raise ValueError("mode must be 'hang' or 'drop'")
        return failure

    def applies_to(self, op: str, create_ops: frozenset[str]) -> bool:
        if self.op == ANY_OP:
            return True
        if self.op is None:
            return op in create_ops
        return self.op == op


@dataclass
class Knobs:
    latency_ms: int = 0
    error_rate: float = 0.0  # share of create calls answered 500 before processing
    answer_lost_rate: float = 0.0  # share of create calls processed whose answer is then lost

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Knobs:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RequestRecord:
    at: datetime
    method: str
    path: str
    op: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    account: str | None = None
    status: int | None = None
    scripted: str | None = None


@dataclass
class FakePost:
    id: str
    account: str
    text: str
    created_at: datetime
    body: dict[str, Any]
    reply_to: str | None = None
    media_ids: list[str] = field(default_factory=list)
    deleted: bool = False


@dataclass
class _AccountPosts:
    """One account's posts in creation order, with their creation times for counting by time."""

    posts: list[FakePost] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    ascending: bool = True  # times never went backwards, so bisect can count them

    def add(self, post: FakePost) -> None:
        if self.times and post.created_at < self.times[-1]:
            self.ascending = False
        self.posts.append(post)
        self.times.append(post.created_at)

    def count_since(self, since: datetime) -> int:
        if self.ascending:
            return len(self.times) - bisect.bisect_left(self.times, since)
        return sum(1 for t in self.times if t >= since)


class FakeScript:
    """Per-account and global knobs plus one-shot failure queues. Thread-safe."""

    def __init__(self, create_ops: frozenset[str]) -> None:
        self._create_ops = create_ops
        self._lock = threading.Lock()
        self._queues: dict[str | None, deque[ScriptedFailure]] = {}
        self._knobs: dict[str | None, Knobs] = {}

    def push(self, failure: ScriptedFailure, *, account: str | None = None, times: int = 1) -> None:
        with self._lock:
            queue = self._queues.setdefault(account, deque())
            queue.extend(ScriptedFailure(**asdict(failure)) for _ in range(times))

    def set_knobs(self, knobs: Knobs, *, account: str | None = None) -> None:
        with self._lock:
            self._knobs[account] = knobs

    def knobs_for(self, keys: Iterable[str]) -> Knobs:
        with self._lock:
            for key in keys:
                if key in self._knobs:
                    return self._knobs[key]
            return self._knobs.get(None, Knobs())

    def take(self, op: str, keys: Iterable[str]) -> ScriptedFailure | None:
        """The first queued failure for this call: account queues before the global one."""
        with self._lock:
            for key in [*keys, None]:
                queue = self._queues.get(key)
                if not queue:
                    continue
                for failure in queue:
                    if failure.applies_to(op, self._create_ops):
                        queue.remove(failure)
                        return failure
            return None

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {str(k): [asdict(f) for f in q] for k, q in self._queues.items() if q}

    def reset(self) -> None:
        with self._lock:
            self._queues.clear()
            self._knobs.clear()


@dataclass
class Call:
    """One request as a fake handler sees it: decoded payload plus its receipt."""

    request: Request
    op: str
    raw: bytes
    payload: Any
    record: RequestRecord
    failure: ScriptedFailure | None = None  # set by FakePlatform.gate


class FakePlatform:
    """State and behaviour every fake shares; subclasses add accounts and the platform's answers."""

    platform: ClassVar[str] = ""
    create_ops: ClassVar[frozenset[str]] = frozenset()
    supported_kinds: ClassVar[frozenset[str]] = FAILURE_KINDS

    def __init__(self, *, seed: int | None = None) -> None:
        self.script = FakeScript(self.create_ops)
        self._lock = threading.RLock()
        self._requests: list[RequestRecord] = []
        self._posts: list[FakePost] = []
        # Indexes over _posts (receipt logs grow to tens of thousands in burst benchmarks; every create
        # would otherwise scan them all): first post by id, and each owning account's posts.
        self._posts_by_id: dict[str, FakePost] = {}
        self._posts_by_account: dict[str, _AccountPosts] = {}
        self._random = random.Random(seed)
        self.clock_offset = timedelta(0)

    # -- clock ---------------------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def advance(self, seconds: float) -> datetime:
        """Move the fake's clock forward (token expiry, grace windows) without sleeping."""
        with self._lock:
            self.clock_offset += timedelta(seconds=seconds)
        return self.now()

    # -- scripting -----------------------------------------------------------------------------------
    def push_failure(self, kind: str, *, account: str | None = None, times: int = 1, **options: Any) -> None:
        failure = ScriptedFailure.from_json({"kind": kind, **options})
        if failure.kind not in self.supported_kinds:
            raise ValueError(f"{self.platform} fake does not support {kind!r}")
        self.script.push(failure, account=account, times=times)

    def set_knobs(self, *, account: str | None = None, **values: Any) -> Knobs:
        knobs = Knobs.from_json(values)
        self.script.set_knobs(knobs, account=account)
        return knobs

    async def gate(self, call: Call, keys: list[str]) -> ScriptedFailure | None:
        """Apply latency and return the failure this call must suffer, if any."""
        knobs = self.script.knobs_for(keys)
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000)
        failure = self.script.take(call.op, keys)
        if failure is None and call.op in self.create_ops:
            roll = self._random.random()
            if roll < knobs.error_rate:
                failure = ScriptedFailure("server_error")
            elif roll < knobs.error_rate + knobs.answer_lost_rate:
                failure = ScriptedFailure("answer_lost")
        if failure is not None:
            call.record.scripted = failure.kind
            call.failure = failure
        return failure

    # -- receipts ------------------------------------------------------------------------------------
    def record_request(self, request: Request, op: str, payload: Any) -> RequestRecord:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS}
        record = RequestRecord(
            at=self.now(),
            method=request.method,
            path=request.scope["path"],  # what request.url.path says, without building the whole URL
            op=op,
            query=dict(request.query_params),
            headers=headers,
            body=payload,
        )
        with self._lock:
            self._requests.append(record)
        return record

    def requests(self, *, path: str | None = None, op: str | None = None) -> list[RequestRecord]:
        with self._lock:
            found = list(self._requests)
        if path is not None:
            found = [r for r in found if r.path == path]
        if op is not None:
            found = [r for r in found if r.op == op]
        return found

    def add_post(self, post: FakePost) -> FakePost:
        with self._lock:
            self._posts.append(post)
            self._posts_by_id.setdefault(post.id, post)
            self._posts_by_account.setdefault(post.account, _AccountPosts()).add(post)
        return post

    def _owners(self, account: str) -> list[str]:
        """Owning accounts of stored posts that `account` names (as the account itself or one of its keys)."""
        with self._lock:
            return [o for o in self._posts_by_account if account == o or account in self.account_keys_of(o)]

    def posts(self, *, account: str | None = None, include_deleted: bool = False) -> list[FakePost]:
        with self._lock:
            if account is None:
                found = list(self._posts)
            else:
                owners = self._owners(account)
                if len(owners) == 1:
                    found = list(self._posts_by_account[owners[0]].posts)
                else:
                    wanted = set(owners)
                    found = [p for p in self._posts if p.account in wanted] if wanted else []
        if not include_deleted:
            found = [p for p in found if not p.deleted]
        return found

    def count_posts_since(self, account: str, since: datetime) -> int:
        """`len([p for p in posts(account=account, include_deleted=True) if p.created_at >= since])`, fast."""
        with self._lock:
            return sum(self._posts_by_account[o].count_since(since) for o in self._owners(account))

    def find_post(self, post_id: str) -> FakePost | None:
        with self._lock:
            return self._posts_by_id.get(post_id)

    def reset(self, *, accounts: bool = False) -> None:
        """Forget requests, posts, scripts and the clock offset; `accounts=True` also drops accounts."""
        with self._lock:
            self._requests.clear()
            self._posts.clear()
            self._posts_by_id.clear()
            self._posts_by_account.clear()
            self.clock_offset = timedelta(0)
        self.script.reset()

    # -- platform hooks --------------------------------------------------------------------------------
    def account_keys_of(self, account: str) -> list[str]:
        """Every key an account may be scripted by (token, id, username / DID, handle)."""
        return []

    def register_account_json(self, data: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def list_accounts_json(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def expire_token(self, token: str) -> bool:
        raise NotImplementedError

    def failure_response(self, failure: ScriptedFailure, op: str) -> Response:
        raise NotImplementedError

    def lost_answer(self, failure: ScriptedFailure | None, op: str) -> Response:
        failure = failure or ScriptedFailure("answer_lost")
        fallback = self.failure_response(ScriptedFailure("server_error", status=504), op)
        return LostAnswer(mode=failure.mode, hang_seconds=failure.hang_seconds, fallback=fallback)


class LostAnswer(Response):
    """The request was processed; the client never gets a usable answer.

    `hang`: wait until the client disconnects (its timeout), answering 504 only if it outlasts
    `hang_seconds`. `drop`: start a 200 answer and cut the connection mid-body.
    """

    def __init__(self, *, mode: str, hang_seconds: float, fallback: Response) -> None:
        super().__init__(status_code=200)
        self.mode = mode
        self.hang_seconds = hang_seconds
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.mode == "drop":
            headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"data":', "more_body": True})
            # Raising after the answer started makes the server close the socket mid-body.
            raise _DroppedOnPurpose("fake platform dropped the answer on purpose")
        try:
            await asyncio.wait_for(_wait_for_disconnect(receive), self.hang_seconds)
        except TimeoutError:
            await self.fallback(scope, receive, send)


class _DroppedOnPurpose(ConnectionAbortedError):
    """Raised to make the server cut a connection; never a bug, so never logged as one."""


def _not_on_purpose(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], _DroppedOnPurpose))


# uvicorn logs every exception escaping the app with a traceback; a scripted drop is not an error.
logging.getLogger("uvicorn.error").addFilter(_not_on_purpose)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# -- request decoding ----------------------------------------------------------------------------------


@dataclass
class FormPart:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    main, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        key, _, val = item.strip().partition("=")
        params[key.lower()] = val.strip().strip('"')
    return main.strip().lower(), params


def parse_multipart(body: bytes, content_type: str) -> dict[str, FormPart]:
    """Minimal multipart/form-data parser (python-multipart is not a dependency)."""
    _, params = _header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError("multipart body without boundary")
    parts: dict[str, FormPart] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in head.decode("utf-8", "replace").split("\r\n"))
        )
        _, disposition = _header_params(headers.get("content-disposition", ""))
        name = disposition.get("name", "")
        parts[name] = FormPart(name, data, disposition.get("filename"), headers.get("content-type"))
    return parts


def decode_payload(raw: bytes, content_type: str) -> Any:
    """JSON, form fields or a size summary: what the receipt log keeps and handlers read."""
    kind, _ = _header_params(content_type or "")
    if kind == "application/json" or (not kind and raw[:1] in (b"{", b"[")):
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return {"invalid_json": raw[:200].decode("utf-8", "replace")}
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if kind == "multipart/form-data":
        return {
            name: part.text if _is_text_field(part) else _blob_summary(part)
            for name, part in parse_multipart(raw, content_type).items()
        }
    return {"bytes": len(raw), "content_type": kind} if raw else None


def _is_text_field(part: FormPart) -> bool:
    return part.filename is None and (part.content_type or "text/plain").startswith("text/plain")


def _blob_summary(part: FormPart) -> dict[str, Any]:
    return {"filename": part.filename, "content_type": part.content_type, "bytes": len(part.data)}


Handler = Callable[[Call], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fake: FakePlatform, op: str | Callable[[Request], str], handler: Handler) -> Endpoint:
    """Wrap a handler: read the body, write the receipt, run it, note the status."""

    async def run(request: Request) -> Response:
        name = op(request) if callable(op) else op
        raw = await request.body()
        payload = decode_payload(raw, request.headers.get("content-type", ""))
        record = fake.record_request(request, name, payload)
        response = await handler(Call(request=request, op=name, raw=raw, payload=payload, record=record))
        record.status = None if isinstance(response, LostAnswer) else response.status_code
        return response

    return run


class FakeApp(Starlette):
    """A Starlette app that serves its hot endpoints (exact method and path) ahead of the middleware stack.

    A burst benchmark sends tens of thousands of creates to one fake process; Starlette's error and
    exception middleware plus routing cost about as much CPU as the fake's own work. The answers are the
    same: an exception still escapes to the server (which answers 500, or cuts a started answer), as it
    does through Starlette's ServerErrorMiddleware.
    """

    def __init__(self, *, routes: list[Route], hot: dict[tuple[str, str], Endpoint]) -> None:
        super().__init__(routes=routes)
        self.hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (hot := self.hot.get((scope["method"], scope["path"]))) is not None:
            scope["app"] = self
            response = await hot(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# -- admin API -----------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return to_jsonable(asdict(value))
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data = json.loads(raw) if raw else {}
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def admin_routes(fake: FakePlatform) -> list[Route]:
    """`/_fake/...`: script failures, set knobs, register accounts, read receipts, reset."""

    def guarded(action: Callable[[Request], Awaitable[Any]]) -> Endpoint:
        async def run(request: Request) -> Response:
            try:
                return JSONResponse(to_jsonable(await action(request)))
            except (ValueError, TypeError, KeyError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return run

    async def script(request: Request) -> Any:
        data = await _json_body(request)
        account, times = data.pop("account", None), int(data.pop("times", 1))
        fake.push_failure(data.pop("kind"), account=account, times=times, **data)
        return {"queued": times, "pending": fake.script.pending()}

    async def knobs(request: Request) -> Any:
        data = await _json_body(request)
        return fake.set_knobs(account=data.pop("account", None), **data)

    async def accounts(request: Request) -> Any:
        if request.method == "GET":
            return {"accounts": fake.list_accounts_json()}
        return fake.register_account_json(await _json_body(request))

    async def posts(request: Request) -> Any:
        q = request.query_params
        found = fake.posts(account=q.get("account"), include_deleted=q.get("include_deleted") == "1")
        return {"posts": found}

    async def requests(request: Request) -> Any:
        q = request.query_params
        return {"requests": fake.requests(path=q.get("path"), op=q.get("op"))}

    async def reset(request: Request) -> Any:
        data = await _json_body(request)
        fake.reset(accounts=bool(data.get("accounts", False)))
        return {"reset": True}

    async def clock(request: Request) -> Any:
        data = await _json_body(request)
        return {"now": fake.advance(float(data.get("advance_seconds", 0)))}

    async def expire(request: Request) -> Any:
        data = await _json_body(request)
        return {"expired": fake.expire_token(str(data["token"]))}

    async def health(request: Request) -> Any:
        return {"platform": fake.platform, "ok": True}

    return [
        Route("/_fake/health", guarded(health), methods=["GET"]),
        Route("/_fake/script", guarded(script), methods=["POST"]),
        Route("/_fake/knobs", guarded(knobs), methods=["POST"]),
        Route("/_fake/accounts", guarded(accounts), methods=["GET", "POST"]),
        Route("/_fake/posts", guarded(posts), methods=["GET"]),
        Route("/_fake/requests", guarded(requests), methods=["GET"]),
        Route("/_fake/reset", guarded(reset), methods=["POST"]),
        Route("/_fake/clock", guarded(clock), methods=["POST"]),
        Route("/_fake/tokens/expire", guarded(expire), methods=["POST"]),
    ]
