"""The media library: presigned uploads, completion checks, ingest by URL, signed content URLs, deletion.

Stored objects are removed only after the database change commits; a failed removal is recorded in
`storage_deletions` and retried by `sweep()`, which also removes uploads never completed within 24 h.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.audit.service import audit_service
from postwright.config import Settings
from postwright.db.models import MediaAsset, StorageDeletion
from postwright.db.session import after_commit, after_rollback
from postwright.errors import Conflict, NotFound, ValidationFailed
from postwright.kit.clock import utcnow
from postwright.kit.ids import new_id
from postwright.kit.pagination import Page, PageRequest, paginate
from postwright.media.probe import probe_async
from postwright.media.ssrf import (
    SIZE_CAPS,
    MediaKind,
    MediaRejected,
    Resolver,
    check_media,
    fetch_media,
    kind_for_mime,
    normalize_mime,
)
from postwright.media.storage import (
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    SignatureError,
    Storage,
    local_media_path,
    verify_local_signature,
)
from postwright.posts.repository import PostsRepository
from postwright.posts.schemas import MediaItemIn
from postwright.workspaces.auth import Principal, Role, Scope

log = structlog.get_logger("postwright.media")
ORPHAN_AGE = timedelta(hours=24)
UPLOAD_URL_TTL = 3600
IN_USE = ("SCHEDULED", "PUBLISHING")


def build_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        assert settings.s3_bucket
        return S3Storage(
            settings.s3_bucket,
            settings.s3_endpoint_url,
            settings.s3_region,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
            public_endpoint_url=settings.s3_public_endpoint_url,
        )
    return LocalStorage(settings.data_dir / "media")


def build_media_context(settings: Settings, secret_keys: list[str]) -> MediaContext:
    return MediaContext(
        storage=build_storage(settings),
        url_secret=hashlib.sha256(b"postwright-media-urls|" + secret_keys[0].encode()).digest(),
        public_url=settings.base_public_url,
        url_ttl_seconds=settings.media_url_ttl_seconds,
        fetch_timeout=settings.media_fetch_timeout_seconds,
        allow_loopback_http=settings.media_allow_loopback_http,
    )


@dataclass
class MediaContext:
    """What media operations need besides the session: where bytes live and how URLs are signed."""

    storage: Storage
    url_secret: bytes
    public_url: str
    url_ttl_seconds: int = 3600
    fetch_timeout: float = 60.0
    allow_loopback_http: bool = False
    resolver: Resolver | None = None

    def signed_path(self, method: str, media_id: str, ttl: int | None = None) -> tuple[str, int]:
        expires_at = int(time.time()) + (ttl or self.url_ttl_seconds)
        return local_media_path(self.url_secret, method, media_id, expires_at), expires_at

    async def content_url(self, asset: MediaAsset) -> str:
        """A URL platforms can pull the file from (S3 presigned GET, else a signed URL on this server)."""
        presigned = await self.storage.presign_get(asset.storage_key, self.url_ttl_seconds)
        if presigned:
            return presigned
        path, _ = self.signed_path("GET", asset.id)
        return self.public_url.rstrip("/") + path

    def verify(self, method: str, media_id: str, expires: str | None, signature: str | None) -> None:
        try:
            verify_local_signature(self.url_secret, method, media_id, expires, signature)
        except SignatureError as exc:
            raise NotFound("This media URL is not valid or has expired.") from exc


class MediaService:
    async def presign(
        self,
        session: AsyncSession,
        principal: Principal,
        ctx: MediaContext,
        *,
        filename: str,
        mime_type: str,
        size_bytes: int,
        alt_text: str | None,
    ) -> tuple[MediaAsset, str, int]:
        self._require_writer(principal)
        mime = normalize_mime(mime_type)
        kind = kind_for_mime(mime)
        if kind is None or mime is None:
            raise ValidationFailed(
                f"mimeType {mime_type!r} is not a supported media type.",
                details=[{"field": "mimeType", "message": "unsupported"}],
            )
        cap = SIZE_CAPS[kind]
        if size_bytes > cap:
            raise ValidationFailed(
                f"{kind.value} files are limited to {cap} bytes.",
                details=[{"field": "sizeBytes", "message": f"over {cap}"}],
            )
        asset = MediaAsset(
            id=new_id("med"),
            workspace_id=principal.workspace_id,
            kind=kind.value,
            mime_type=mime,
            filename=filename,
            size_bytes=size_bytes,
            alt_text=alt_text,
            status="PENDING_UPLOAD",
        )
        asset.storage_key = f"{principal.workspace_id}/{asset.id}"
        session.add(asset)
        await session.flush()
        url = await ctx.storage.presign_put(asset.storage_key, mime, size_bytes, UPLOAD_URL_TTL)
        expires_at = int(time.time()) + UPLOAD_URL_TTL
        if url is None:
            path, expires_at = ctx.signed_path("PUT", asset.id, UPLOAD_URL_TTL)
            url = ctx.public_url.rstrip("/") + path
        return asset, url, expires_at

    async def receive_upload(
        self,
        session: AsyncSession,
        ctx: MediaContext,
        media_id: str,
        data: bytes,
        *,
        expires: str | None,
        signature: str | None,
    ) -> None:
        """The local signed PUT: the signature is the credential."""
        ctx.verify("PUT", media_id, expires, signature)
        asset = await session.get(MediaAsset, media_id)
        if asset is None or asset.deleted_at is not None:
            raise NotFound("Media not found.")
        if asset.status != "PENDING_UPLOAD":
            raise Conflict(f"This media is already {asset.status}.")
        if asset.size_bytes is not None and len(data) != asset.size_bytes:
            raise ValidationFailed(f"Upload is {len(data)} bytes but {asset.size_bytes} were declared.")
        await ctx.storage.put(asset.storage_key, data, asset.mime_type)

    async def complete(
        self, session: AsyncSession, principal: Principal, ctx: MediaContext, media_id: str
    ) -> MediaAsset:
        """Check the stored object against what was declared, probe it, mark it READY."""
        self._require_writer(principal)
        asset = await self.get(session, principal, media_id, for_update=True)
        if asset.status == "READY":
            return asset
        if asset.status != "PENDING_UPLOAD":
            raise Conflict(f"This media is {asset.status}.")
        try:
            data = await ctx.storage.get(asset.storage_key)
        except ObjectNotFound as exc:
            raise ValidationFailed("Nothing was uploaded for this media yet.") from exc
        try:
            sniffed = check_media(data, declared_mime=asset.mime_type, declared_size=asset.size_bytes)
            await self._describe(asset, data, sniffed.mime)
        except MediaRejected as exc:
            asset.status, asset.error_message = "FAILED", exc.message
            await session.commit()  # keep the FAILED mark although the request answers 400
            await self._remove_now_or_later(session, ctx, [asset.storage_key])
            raise ValidationFailed(f"The uploaded file was refused: {exc.message}.") from exc
        audit_service.record(
            session,
            workspace_id=asset.workspace_id,
            action="media.upload",
            subject_type="media",
            subject_id=asset.id,
            principal=principal,
            data={"kind": asset.kind},
        )
        return asset

    async def from_url(
        self,
        session: AsyncSession,
        principal: Principal,
        ctx: MediaContext,
        *,
        url: str,
        expected_kind: str | None,
        alt_text: str | None,
    ) -> MediaAsset:
        """Fetch an HTTPS URL through the SSRF guard and store it as a READY asset."""
        self._require_writer(principal)
        try:
            fetched, sniffed = await fetch_media(
                url,
                total_timeout=ctx.fetch_timeout,
                resolver=ctx.resolver,
                allow_loopback_http=ctx.allow_loopback_http,
            )
            asset = MediaAsset(
                id=new_id("med"),
                workspace_id=principal.workspace_id,
                kind=sniffed.kind.value,
                mime_type=sniffed.mime,
                alt_text=alt_text,
                status="PENDING_UPLOAD",
                source_url=url[:2048],
            )
            if expected_kind and _family(expected_kind) != _family(sniffed.kind.value):
                raise MediaRejected(f"the URL holds {sniffed.kind.value} content, not {expected_kind}", reason="kind")
            await self._describe(asset, fetched.data, sniffed.mime)
        except MediaRejected as exc:
            raise ValidationFailed(
                f"Could not ingest {url[:200]}: {exc.message}.", details=[{"field": "url", "message": exc.message}]
            ) from exc
        asset.storage_key = f"{principal.workspace_id}/{asset.id}"
        await ctx.storage.put(asset.storage_key, fetched.data, asset.mime_type)
        # If the caller's transaction fails (e.g. the post that ingests this is refused), no row will
        # point at the file and the orphan sweep could never find it: remove it with the rollback.
        key = asset.storage_key

        async def remove_stored() -> None:
            await self._remove_now_or_later(session, ctx, [key])

        after_rollback(session, remove_stored)
        session.add(asset)
        await session.flush()
        audit_service.record(
            session,
            workspace_id=asset.workspace_id,
            action="media.ingest",
            subject_type="media",
            subject_id=asset.id,
            principal=principal,
            data={"kind": asset.kind},
        )
        return asset

    async def ingest_items(
        self, session: AsyncSession, principal: Principal, ctx: MediaContext, items: list[MediaItemIn]
    ) -> list[str]:
        ids = []
        for index, item in enumerate(items):
            try:
                asset = await self.from_url(
                    session, principal, ctx, url=item.url, expected_kind=item.type, alt_text=item.altText
                )
            except ValidationFailed as exc:
                exc.details = [
                    {"field": f"mediaItems[{index}].url", "message": d["message"]} for d in exc.details or []
                ]
                raise
            ids.append(asset.id)
        return ids

    async def get(
        self, session: AsyncSession, principal: Principal, media_id: str, *, for_update: bool = False
    ) -> MediaAsset:
        query = select(MediaAsset).where(
            MediaAsset.id == media_id,
            MediaAsset.workspace_id == principal.workspace_id,
            MediaAsset.deleted_at.is_(None),
        )
        asset = await session.scalar(query.with_for_update() if for_update else query)
        if asset is None:
            raise NotFound(f"Media {media_id} not found.")
        return asset

    async def list(
        self, session: AsyncSession, principal: Principal, *, page: PageRequest, kind: str | None
    ) -> Page[MediaAsset]:
        query = select(MediaAsset).where(
            MediaAsset.workspace_id == principal.workspace_id, MediaAsset.deleted_at.is_(None)
        )
        if kind:
            query = query.where(MediaAsset.kind == kind)
        return await paginate(session, query, MediaAsset.id, page)

    async def delete(self, session: AsyncSession, principal: Principal, ctx: MediaContext, media_id: str) -> None:
        self._require_writer(principal)
        asset = await self.get(session, principal, media_id, for_update=True)
        in_use = await PostsRepository(session).targets_using_media(asset.id, IN_USE)
        if in_use:
            raise Conflict(f"{in_use} scheduled target(s) use this media; cancel or edit those posts first.")
        await self.delete_assets(session, principal, ctx, [asset.id])

    async def delete_assets(
        self, session: AsyncSession, principal: Principal, ctx: MediaContext, media_ids: list[str]
    ) -> None:
        """Soft-delete rows in this transaction; remove stored objects after it commits."""
        rows = list(
            await session.scalars(
                select(MediaAsset).where(
                    MediaAsset.id.in_(media_ids),
                    MediaAsset.workspace_id == principal.workspace_id,
                    MediaAsset.deleted_at.is_(None),
                )
            )
        )
        now = utcnow()
        for asset in rows:
            asset.deleted_at = now
            audit_service.record(
                session,
                workspace_id=asset.workspace_id,
                action="media.delete",
                subject_type="media",
                subject_id=asset.id,
                principal=principal,
            )
        self._delete_objects_after_commit(session, ctx, [a.storage_key for a in rows])

    async def read(
        self, session: AsyncSession, ctx: MediaContext, media_id: str, *, expires: str | None, signature: str | None
    ) -> tuple[MediaAsset, bytes]:
        ctx.verify("GET", media_id, expires, signature)
        asset = await session.get(MediaAsset, media_id)
        if asset is None or asset.deleted_at is not None or asset.status != "READY":
            raise NotFound("Media not found.")
        return asset, await ctx.storage.get(asset.storage_key)

    async def sweep(self, session: AsyncSession, ctx: MediaContext) -> int:
        """Retry failed object deletions and remove uploads never completed within 24 h."""
        removed = 0
        for pending in list(await session.scalars(select(StorageDeletion).limit(500))):
            try:
                await ctx.storage.delete(pending.storage_key)
            except Exception as exc:
                pending.attempts += 1
                pending.last_error = type(exc).__name__
                continue
            await session.delete(pending)
            removed += 1
        cutoff = utcnow() - ORPHAN_AGE
        orphans = list(
            await session.scalars(
                select(MediaAsset)
                .where(
                    MediaAsset.status == "PENDING_UPLOAD",
                    MediaAsset.created_at < cutoff,
                    MediaAsset.deleted_at.is_(None),
                )
                .limit(500)
            )
        )
        for asset in orphans:
            asset.deleted_at = utcnow()
            asset.status = "FAILED"
            asset.error_message = "The upload was never completed."
        self._delete_objects_after_commit(session, ctx, [a.storage_key for a in orphans])
        return removed + len(orphans)

    def _delete_objects_after_commit(self, session: AsyncSession, ctx: MediaContext, keys: list[str]) -> None:
        if not keys:
            return

        async def remove() -> None:
            await self._remove_now_or_later(session, ctx, keys)

        after_commit(session, remove)

    async def _remove_now_or_later(self, session: AsyncSession, ctx: MediaContext, keys: list[str]) -> None:
        """Delete stored objects; record failures for `sweep()` instead of failing the caller."""
        failed = []
        for key in keys:
            try:
                await ctx.storage.delete(key)
            except Exception as exc:
                log.warning("media.delete_failed", storage_key=key, error_type=type(exc).__name__)
                failed.append(key)
        if failed:
            async with AsyncSession(session.bind) as retry_session, retry_session.begin():
                for key in failed:
                    retry_session.add(StorageDeletion(storage_key=key, attempts=1, created_at=utcnow()))

    async def _describe(self, asset: MediaAsset, data: bytes, mime: str) -> None:
        probed = await probe_async(data, mime)
        asset.kind = probed.kind.value
        asset.mime_type = probed.mime_type
        asset.width, asset.height = probed.width, probed.height
        asset.duration_ms, asset.fps, asset.codec = probed.duration_ms, probed.fps, probed.codec
        asset.size_bytes = len(data)
        asset.checksum = "sha256:" + hashlib.sha256(data).hexdigest()
        asset.status = "READY"
        asset.error_message = None

    def _require_writer(self, principal: Principal) -> None:
        principal.require_scopes(Scope.MEDIA_WRITE)
        principal.require_role(Role.EDITOR, "manage media")


def _family(kind: str) -> str:
    return "IMAGE" if kind in (MediaKind.IMAGE.value, MediaKind.GIF.value) else kind


def asset_to_dict(asset: MediaAsset, url: str | None = None) -> dict[str, Any]:
    from postwright.kit.clock import isoformat_z

    body = {
        "id": asset.id,
        "workspaceId": asset.workspace_id,
        "kind": asset.kind,
        "mimeType": asset.mime_type,
        "filename": asset.filename,
        "sizeBytes": asset.size_bytes,
        "width": asset.width,
        "height": asset.height,
        "durationMs": asset.duration_ms,
        "fps": asset.fps,
        "codec": asset.codec,
        "altText": asset.alt_text,
        "status": asset.status,
        "sourceUrl": asset.source_url,
        "checksum": asset.checksum,
        "errorMessage": asset.error_message,
        "createdAt": isoformat_z(asset.created_at),
    }
    if url is not None:
        body["url"] = url
    return body


media_service = MediaService()
