"""One error body for everything: {statusCode, code, message, requestId, details}."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from postwright.errors import PostwrightError

log = structlog.get_logger("postwright.api")

HTTP_CODES = {
    400: "VALIDATION_FAILED",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", None) or request.scope.get("state", {}).get("request_id", "")


def error_body(
    status: int, code: str, message: str, request_id: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"statusCode": status, "code": code, "message": message, "requestId": request_id}
    if details:
        body["details"] = details
    return body


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    # Pydantic puts the union member's tag in the path; users never typed it.
    parts = [p for p in parts if p not in ("flat", "nested")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    seen = set()
    for error in exc.errors():
        field = _field_path(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "json_invalid":
            field, message = "body", "Request body is not valid JSON."
        if (field, message) in seen:
            continue
        seen.add((field, message))
        details.append({"field": field, "message": message})
    return details[:50]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PostwrightError)
    async def _domain(request: Request, exc: PostwrightError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status_code, exc.code, exc.detail, request_id_of(request), exc.details),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        message = "Request validation failed: " + "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return JSONResponse(error_body(400, "VALIDATION_FAILED", message, request_id_of(request), details), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "ERROR")
        message = "Unauthorized" if exc.status_code == 401 else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route matches {request.method} {request.url.path}."
        return JSONResponse(
            error_body(exc.status_code, code, message, request_id_of(request)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        return JSONResponse(
            error_body(500, "INTERNAL", "Internal server error.", request_id_of(request)), status_code=500
        )
