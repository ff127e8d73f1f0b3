"""Pure ASGI middleware: request ids and the body size cap (cheap on the hot path)."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from ulid import ULID

from postwright.api.errors import error_body


def _json_response(status: int, body: dict[str, Any], request_id: str) -> tuple[Message, Message]:
    payload = json.dumps(body).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": payload}


class RequestContextMiddleware:
    """Gives every request a `req_` id (header and error bodies) and refuses oversized bodies."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, upload_max_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_max_bytes = upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{ULID()}"
        scope.setdefault("state", {})["request_id"] = request_id
        header_value = request_id.encode()

        # Signed media uploads carry files; every other body is JSON and small.
        limit = (
            self.upload_max_bytes
            if scope["method"] == "PUT" and scope["path"].endswith("/upload")
            else self.max_body_bytes
        )
        if self._declared_too_large(scope, limit):
            await self._send_too_large(send, request_id, limit)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", header_value))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not response_started:
                await self._send_too_large(send, request_id, limit)

    def _declared_too_large(self, scope: Scope, limit: int) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value) > limit
                except ValueError:
                    return False
        return False

    async def _send_too_large(self, send: Send, request_id: str, limit: int) -> None:
        body = error_body(413, "PAYLOAD_TOO_LARGE", f"Request body exceeds {limit} bytes.", request_id)
        for message in _json_response(413, body, request_id):
            await send(message)


class _BodyTooLarge(StarletteHTTPException):
    # An HTTPException so FastAPI's body reader re-raises it instead of turning it into a 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes.")
