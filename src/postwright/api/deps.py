"""Annotated dependencies: one session per request (committed before the response), the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.api.idempotency import mark_committed
from postwright.db.session import unit_of_work
from postwright.kit.pagination import PageRequest
from postwright.workspaces.auth import Principal
from postwright.workspaces.service import workspaces_service


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(request.app.state.sessionmaker) as session:
        yield session
        # Only reached when the endpoint returned normally: its change and this mark commit together.
        await mark_committed(session, request.scope.get("state", {}))


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def raw_key_of(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("x-api-key")


async def get_principal(request: Request, session: SessionDep) -> Principal:
    principal = await workspaces_service.authenticate(
        session,
        raw_key=raw_key_of(request),
        workspace_hint=request.headers.get("x-workspace-id") or request.query_params.get("workspaceId"),
    )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_page_request(
    limit: Annotated[int | None, Query(description="1-100, default 20")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int | None, Query()] = None,
) -> PageRequest:
    return PageRequest.build(limit, cursor, page)


PageDep = Annotated[PageRequest, Depends(get_page_request)]
