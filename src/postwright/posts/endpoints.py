"""HTTP routes of the posts API: parse, call one service method, shape the output."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.api.deps import PageDep, PrincipalDep, SessionDep
from postwright.db.models import Post
from postwright.posts.schemas import (
    CancelIn,
    PostBody,
    PostInput,
    PublishNowIn,
    RejectIn,
    RescheduleIn,
    attempt_to_dict,
    post_to_dict,
    status_to_dict,
)
from postwright.posts.service import posts_service
from postwright.posts.status import PostStatus
from postwright.publishing.rules import PLATFORMS
from postwright.workspaces.auth import Principal, Scope

router = APIRouter(prefix="/posts", tags=["Posts"])


async def rendered(session: SessionDep, post: Post) -> dict[str, Any]:
    """Flush first so the body shows exactly what will be committed (timestamps included)."""
    await session.flush()
    return post_to_dict(post)


PostStatusParam = Literal[tuple(s.value for s in PostStatus)]  # type: ignore[valid-type]
PlatformParam = Literal[PLATFORMS]  # type: ignore[valid-type]


@router.post("", status_code=201, summary="Create a post (draft or scheduled)")
async def create_post(
    body: Annotated[PostBody, Body()], session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    principal.require_scopes(Scope.POSTS_WRITE)
    post = await posts_service.create(session, principal, PostInput.from_body(body))
    return await rendered(session, post)


@router.get("", summary="List posts, newest first")
async def list_posts(
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    status: PostStatusParam | None = None,
    platform: PlatformParam | None = None,
    socialAccountId: Annotated[str | None, Query(max_length=64)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    principal.require_scopes(Scope.POSTS_READ)
    result = await posts_service.list(
        session,
        principal,
        page=page,
        status=status,
        platform=platform,
        social_account_id=socialAccountId,
        scheduled_from=from_,
        scheduled_to=to,
        text=q,
    )
    return {"data": [post_to_dict(p) for p in result.items], "pagination": result.pagination()}


@router.get("/{post_id}", summary="Get one post with its targets and media")
async def get_post(post_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_scopes(Scope.POSTS_READ)
    return post_to_dict(await posts_service.read(session, principal, post_id))


@router.get("/{post_id}/status", summary="Compact delivery status")
async def get_post_status(post_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_scopes(Scope.POSTS_READ)
    return status_to_dict(await posts_service.read(session, principal, post_id))


@router.get("/{post_id}/attempts", summary="Publish-attempt history, kept across edits")
async def get_post_attempts(post_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_scopes(Scope.POSTS_READ)
    attempts = await posts_service.attempts(session, principal, post_id)
    return {"data": [attempt_to_dict(a) for a in attempts]}


@router.patch("/{post_id}", summary="Replace a post's content, accounts, media and time")
async def update_post(
    post_id: str, body: Annotated[PostBody, Body()], session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    principal.require_scopes(Scope.POSTS_WRITE)
    post = await posts_service.update(session, principal, post_id, PostInput.from_body(body))
    return await rendered(session, post)


@router.post("/{post_id}/cancel", summary="Cancel a scheduled post (stays visible as CANCELED)")
async def cancel_post(
    post_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    body: Annotated[CancelIn | None, Body()] = None,
) -> dict[str, Any]:
    principal.require_scopes(Scope.PUBLISH_WRITE)
    post = await posts_service.cancel(session, principal, post_id, body.reason if body else None)
    return await rendered(session, post)


@router.post("/{post_id}/publish", summary="Publish now, after a lead time in which cancel still works")
async def publish_post(
    post_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    body: Annotated[PublishNowIn | None, Body()] = None,
) -> dict[str, Any]:
    principal.require_scopes(Scope.PUBLISH_WRITE)
    post = await posts_service.publish_now(session, principal, post_id, (body or PublishNowIn()).leadSeconds)
    return await rendered(session, post)


@router.post("/{post_id}/reschedule", summary="Move a scheduled post to another time")
async def reschedule_post(
    post_id: str, body: RescheduleIn, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    principal.require_scopes(Scope.PUBLISH_WRITE)
    post = await posts_service.reschedule(session, principal, post_id, body.scheduledFor, body.timezone)
    return await rendered(session, post)


@router.post("/{post_id}/approve", summary="Approve a post awaiting approval (admin/owner)")
async def approve_post(post_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_scopes(Scope.PUBLISH_WRITE)
    return await rendered(session, await posts_service.approve(session, principal, post_id))


@router.post("/{post_id}/reject", summary="Send a post awaiting approval back to draft (admin/owner)")
async def reject_post(
    post_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    body: Annotated[RejectIn | None, Body()] = None,
) -> dict[str, Any]:
    principal.require_scopes(Scope.PUBLISH_WRITE)
    post = await posts_service.reject(session, principal, post_id, body.reason if body else None)
    return await rendered(session, post)


@router.post("/{post_id}/targets/{target_id}/retry", summary="Retry one FAILED target now")
async def retry_target(post_id: str, target_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_scopes(Scope.PUBLISH_WRITE)
    return await rendered(session, await posts_service.retry_target(session, principal, post_id, target_id))


@router.post("/{post_id}/targets/{target_id}/first-comment/retry", summary="Retry a failed first comment")
async def retry_first_comment(
    post_id: str, target_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await _retry_follow_up(posts_service.retry_first_comment, post_id, target_id, request, session, principal)


@router.post("/{post_id}/targets/{target_id}/thread/retry", summary="Resume a thread from its failed part")
async def retry_thread(
    post_id: str, target_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await _retry_follow_up(posts_service.retry_thread, post_id, target_id, request, session, principal)


async def _retry_follow_up(
    retry: Callable[..., Awaitable[Post]],
    post_id: str,
    target_id: str,
    request: Request,
    session: AsyncSession,
    principal: Principal,
) -> dict[str, Any]:
    principal.require_scopes(Scope.PUBLISH_WRITE)
    cooldown = request.app.state.settings.first_comment_cooldown_seconds
    return await rendered(session, await retry(session, principal, post_id, target_id, cooldown_seconds=cooldown))


@router.delete("/{post_id}", summary="Cancel and soft-delete a post", status_code=200)
async def delete_post(
    post_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    deleteMedia: bool = False,
) -> Response:
    principal.require_scopes(Scope.POSTS_WRITE)
    await posts_service.delete(session, principal, post_id, delete_media=deleteMedia)
    return Response(content=b'{"success":true}', media_type="application/json")
