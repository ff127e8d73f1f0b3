"""HTTP routes of the media library, plus the signed upload/content URLs (the signature is the credential)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import Field

from postwright.api.deps import PageDep, PrincipalDep, SessionDep
from postwright.kit.clock import isoformat_z
from postwright.media.service import MediaContext, asset_to_dict, media_service
from postwright.posts.schemas import AltText, MediaKind, StrictModel

router = APIRouter(prefix="/media", tags=["Media"])


class PresignIn(StrictModel):
    filename: Annotated[str, Field(min_length=1, max_length=255)]
    mimeType: Annotated[str, Field(min_length=3, max_length=127)]
    sizeBytes: Annotated[int, Field(ge=1)]
    altText: AltText | None = None


class FromUrlIn(StrictModel):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    type: MediaKind | None = None
    altText: AltText | None = None


def media_context(request: Request) -> MediaContext:
    return request.app.state.media


@router.post("/presign", status_code=201, summary="Start an upload: a media id and a signed PUT URL")
async def presign(body: PresignIn, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    asset, url, expires_at = await media_service.presign(
        session,
        principal,
        media_context(request),
        filename=body.filename,
        mime_type=body.mimeType,
        size_bytes=body.sizeBytes,
        alt_text=body.altText,
    )
    from datetime import UTC, datetime

    return {
        "id": asset.id,
        "uploadUrl": url,
        "method": "PUT",
        "headers": {"Content-Type": asset.mime_type},
        "expiresAt": isoformat_z(datetime.fromtimestamp(expires_at, UTC)),
        "media": asset_to_dict(asset),
    }


@router.put("/{media_id}/upload", summary="Signed upload target of POST /media/presign (local storage)")
async def upload(
    media_id: str,
    request: Request,
    session: SessionDep,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    signature: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    data = await request.body()
    await media_service.receive_upload(
        session, media_context(request), media_id, data, expires=expires, signature=signature
    )
    return Response(status_code=200, content=b'{"success":true}', media_type="application/json")


@router.post("/{media_id}/complete", summary="Check the uploaded file, probe it and mark it READY")
async def complete(media_id: str, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    asset = await media_service.complete(session, principal, media_context(request), media_id)
    return asset_to_dict(asset)


@router.post("/from-url", status_code=201, summary="Ingest an HTTPS URL (SSRF-guarded)")
async def from_url(body: FromUrlIn, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    asset = await media_service.from_url(
        session, principal, media_context(request), url=body.url, expected_kind=body.type, alt_text=body.altText
    )
    return asset_to_dict(asset)


@router.get("", summary="List media, newest first")
async def list_media(
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    kind: Literal["IMAGE", "VIDEO", "GIF", "DOCUMENT"] | None = None,
) -> dict[str, Any]:
    from postwright.workspaces.auth import Scope

    principal.require_scopes(Scope.POSTS_READ)
    result = await media_service.list(session, principal, page=page, kind=kind)
    return {"data": [asset_to_dict(a) for a in result.items], "pagination": result.pagination()}


@router.get("/{media_id}", summary="One media asset, with a short-lived content URL")
async def get_media(media_id: str, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    from postwright.workspaces.auth import Scope

    principal.require_scopes(Scope.POSTS_READ)
    asset = await media_service.get(session, principal, media_id)
    ctx = media_context(request)
    return asset_to_dict(asset, await ctx.content_url(asset) if asset.status == "READY" else None)


@router.get("/{media_id}/content", summary="The file itself, behind a signed expiring URL")
async def content(
    media_id: str,
    request: Request,
    session: SessionDep,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    signature: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    ctx = media_context(request)
    asset, data = await media_service.read(session, ctx, media_id, expires=expires, signature=signature)
    presigned = await ctx.storage.presign_get(asset.storage_key, 300)
    if presigned:
        return RedirectResponse(presigned, status_code=302)
    return Response(content=data, media_type=asset.mime_type, headers={"Cache-Control": "private, max-age=300"})


@router.delete("/{media_id}", summary="Delete a media asset (409 while a scheduled post uses it)")
async def delete_media(media_id: str, request: Request, session: SessionDep, principal: PrincipalDep) -> JSONResponse:
    await media_service.delete(session, principal, media_context(request), media_id)
    return JSONResponse({"success": True})
