"""Keyset paging over time-ordered ids (newest first), with `page` as an offset fallback."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from postwright.errors import ValidationFailed

T = TypeVar("T")
MAX_LIMIT = 100


@dataclass(frozen=True)
class PageRequest:
    limit: int = 20
    cursor: str | None = None
    page: int | None = None

    @classmethod
    def build(cls, limit: int | None, cursor: str | None, page: int | None) -> PageRequest:
        limit = 20 if limit is None else limit
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(
                f"limit must be between 1 and {MAX_LIMIT}.",
                details=[{"field": "limit", "message": "out of range"}],
            )
        if page is not None and page < 1:
            raise ValidationFailed("page must be 1 or more.", details=[{"field": "page", "message": "out of range"}])
        if cursor is not None and page is not None:
            raise ValidationFailed("Use either cursor or page, not both.")
        return cls(limit=limit, cursor=cursor, page=page)


@dataclass
class Page(Generic[T]):
    items: list[T]
    limit: int
    has_next_page: bool
    next_cursor: str | None
    page: int | None = None

    def pagination(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "limit": self.limit,
            "hasNextPage": self.has_next_page,
            "nextCursor": self.next_cursor,
        }
        if self.page is not None:
            body["page"] = self.page
        return body


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("cursor is not valid.", details=[{"field": "cursor", "message": "malformed"}]) from exc
    if "_" not in value or len(value) > 64:
        raise ValidationFailed("cursor is not valid.", details=[{"field": "cursor", "message": "malformed"}])
    return value


async def paginate(
    session: AsyncSession, query: Select[Any], id_column: InstrumentedAttribute[str], request: PageRequest
) -> Page[Any]:
    query = query.order_by(id_column.desc())
    if request.cursor:
        query = query.where(id_column < decode_cursor(request.cursor))
    elif request.page:
        query = query.offset((request.page - 1) * request.limit)
    rows = list((await session.scalars(query.limit(request.limit + 1))).all())
    has_next = len(rows) > request.limit
    rows = rows[: request.limit]
    next_cursor = encode_cursor(rows[-1].id) if has_next and rows else None
    return Page(rows, request.limit, has_next, next_cursor, request.page)
