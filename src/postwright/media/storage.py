"""Where media bytes live, and how URLs to them are signed.

This module decides:

* **One storage interface** (``Storage``) with two implementations: ``LocalStorage`` (files under
  the data dir, the default) and ``S3Storage`` (any S3-compatible service; boto3 runs in a worker
  thread so the event loop never blocks on it).
* **What a key may look like** (``validate_key``): ``/``-separated segments of
  ``[A-Za-z0-9._-]``, no empty/``.``/``..`` segments, at most 512 characters. The same rule for both
  backends means a key that works locally works on S3, and a key can never name a path outside
  the local root.
* **How local URLs are signed** (``sign_local_url`` / ``verify_local_signature``): HMAC-SHA256 over
  ``method``, media id and expiry, compared in constant time. The method is signed so a
  download link cannot be replayed as an upload link. Content type and size are *not* signed:
  the upload handler checks them against the media row, which is the source of truth.
* **Presigning**: ``presign_put``/``presign_get`` return a direct URL when the backend can issue
  one (S3) and ``None`` when the caller must hand out a locally signed URL to this server
  (``LocalStorage``).

Stored content type: S3 keeps it as object metadata; ``LocalStorage`` ignores it, because the
media row in the database records the MIME type anyway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "MAX_PRESIGN_SECONDS",
    "InvalidKey",
    "LocalStorage",
    "ObjectNotFound",
    "S3Storage",
    "SignatureError",
    "Storage",
    "StorageError",
    "local_media_path",
    "sign_local_url",
    "validate_key",
    "verify_local_signature",
]

# S3 SigV4 presigned URLs cannot outlive 7 days; applying the same ceiling locally keeps both
# backends interchangeable.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_MAX_KEY_LENGTH = 512
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class StorageError(Exception):
    """Base class for storage failures."""


class ObjectNotFound(StorageError):
    """``get`` on a key that does not exist."""


class InvalidKey(StorageError, ValueError):
    """A key that fails ``validate_key`` (or would escape the local root)."""


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise ``InvalidKey``."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_LENGTH:
        raise InvalidKey(f"invalid storage key: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise InvalidKey(f"invalid storage key: {key!r}")
    return key


def _check_expires(expires: int) -> int:
    if not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
    return expires


@runtime_checkable
class Storage(Protocol):
    """Async blob store keyed by ``validate_key``-safe strings."""

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFound`` if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether the object exists."""
        ...

    async def size(self, key: str) -> int | None:
        """Object size in bytes, or None if absent."""
        ...

    async def presign_put(self, key: str, content_type: str, size: int, expires: int) -> str | None:
        """A URL the client can PUT ``size`` bytes of ``content_type`` to within ``expires`` seconds,
        or None if the caller must issue a local signed upload URL instead.

        The upload must still be verified afterwards (``size``, then sniff/probe the bytes): not
        every backend can enforce the declared type and length."""
        ...

    async def presign_get(self, key: str, expires: int) -> str | None:
        """A URL that serves the object for ``expires`` seconds, or None to use a local signed URL."""
        ...


# --------------------------------------------------------------------------------------------
# Local filesystem
# --------------------------------------------------------------------------------------------


class LocalStorage:
    """Files under ``root`` (created on demand). Writes are atomic: temp file, fsync, rename."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Filesystem path for ``key``; lets HTTP handlers stream large files instead of ``get``.

        The resolved path is re-checked against the resolved root so a symlink planted inside the
        data dir cannot point a key outside it.
        """
        validate_key(key)
        root = self.root.resolve()
        candidate = (root / key).resolve()
        if not candidate.is_relative_to(root) or candidate == root:
            raise InvalidKey(f"invalid storage key: {key!r}")
        return candidate

    def _put_sync(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _get_sync(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def _delete_sync(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self.path(key).unlink()

    def _size_sync(self, key: str) -> int | None:
        p = self.path(key)
        try:
            return p.stat().st_size if p.is_file() else None
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put_sync, key, data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get_sync, key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete_sync, key)

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    async def size(self, key: str) -> int | None:
        return await asyncio.to_thread(self._size_sync, key)

    async def presign_put(self, key: str, content_type: str, size: int, expires: int) -> str | None:
        validate_key(key)
        _check_expires(expires)
        return None

    async def presign_get(self, key: str, expires: int) -> str | None:
        validate_key(key)
        _check_expires(expires)
        return None


# --------------------------------------------------------------------------------------------
# S3-compatible
# --------------------------------------------------------------------------------------------


class S3Storage:
    """S3 or an S3-compatible service (MinIO, R2, Ceph, moto).

    ``endpoint_url`` is where this server talks to the store; ``public_endpoint_url`` (optional)
    is the host presigned URLs should carry when clients and platforms reach the store under a
    different name (e.g. ``http://minio:9000`` internally vs ``https://media.example.com``).
    Path-style addressing is the default whenever a custom endpoint is given, because
    self-hosted stores rarely have wildcard DNS for virtual-hosted buckets.
    Missing credentials fall back to boto3's default chain (env, profile, instance role).
    """

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        public_endpoint_url: str | None = None,
        addressing_style: Literal["auto", "path", "virtual"] | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        style = addressing_style or ("path" if endpoint_url else "auto")
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
        )
        # Sessions are not thread-safe but clients are; build both clients here, use them from
        # worker threads afterwards.
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region or "us-east-1",
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._presign_client: Any = (
            session.client("s3", endpoint_url=public_endpoint_url, config=config)
            if public_endpoint_url
            else self._client
        )

    @staticmethod
    def _is_missing(exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("404", "NoSuchKey", "NotFound") or status == 404

    def _get_sync(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._is_missing(exc):
                raise ObjectNotFound(key) from None
            raise
        body = obj["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def _size_sync(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    def _ensure_bucket_sync(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not self._is_missing(exc):
                raise
            self._client.create_bucket(Bucket=self.bucket)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (handy for MinIO dev setups and tests)."""
        await asyncio.to_thread(self._ensure_bucket_sync)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
        )

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await asyncio.to_thread(self._get_sync, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    async def size(self, key: str) -> int | None:
        validate_key(key)
        return await asyncio.to_thread(self._size_sync, key)

    async def presign_put(self, key: str, content_type: str, size: int, expires: int) -> str | None:
        """Presigned PUT. ``Content-Type`` is a signed header, so the client must send exactly
        ``content_type``; the length cannot be enforced by a presigned PUT, hence the
        verify-after-upload rule in ``Storage.presign_put``."""
        validate_key(key)
        _check_expires(expires)
        if size < 0:
            raise ValueError("size must be >= 0")
        # Signing is local computation (no network), so no thread hop is needed.
        url: str = self._presign_client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires,
            HttpMethod="PUT",
        )
        return url

    async def presign_get(self, key: str, expires: int) -> str | None:
        validate_key(key)
        _check_expires(expires)
        url: str = self._presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
        )
        return url


# --------------------------------------------------------------------------------------------
# Local signed URLs
# --------------------------------------------------------------------------------------------

_SIGNABLE_METHODS = frozenset({"GET", "PUT"})
_SIGNATURE_CONTEXT = b"postwright-media-url-v1"
_EXPIRES_PATTERN = re.compile(r"^[0-9]{1,12}$")


class SignatureError(Exception):
    """A local signed URL failed verification. ``reason`` is ``malformed``, ``invalid`` or ``expired``.

    Map to 403; the message is safe to show.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _canonical_method(method: str) -> str:
    upper = method.upper()
    # HEAD is a GET without a body; a download link must answer both.
    if upper == "HEAD":
        upper = "GET"
    if upper not in _SIGNABLE_METHODS:
        raise ValueError(f"only GET and PUT URLs can be signed, not {method!r}")
    return upper


def _signature(secret: bytes, method: str, media_id: str, expires_at: int) -> str:
    if not secret:
        raise ValueError("signing secret must not be empty")
    if "\n" in media_id:
        raise ValueError("media_id must not contain newlines")
    message = b"\n".join([_SIGNATURE_CONTEXT, method.encode(), media_id.encode(), str(expires_at).encode()])
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_local_url(secret: bytes, method: str, media_id: str, expires_at: int) -> str:
    """Query string ``expires=<unix seconds>&signature=<b64url HMAC>`` for a local media URL.

    ``method`` is ``"GET"`` (content download; also valid for HEAD) or ``"PUT"`` (upload).
    The result contains only URL-safe characters and needs no further quoting.
    """
    canonical = _canonical_method(method)
    expires_at = int(expires_at)
    if expires_at < 0:
        raise ValueError("expires_at must be a unix timestamp")
    return f"expires={expires_at}&signature={_signature(secret, canonical, media_id, expires_at)}"


def local_media_path(
    secret: bytes, method: str, media_id: str, expires_at: int, *, prefix: str = "/api/v1/media"
) -> str:
    """Path + query: ``{prefix}/{id}/content?...`` for GET, ``{prefix}/{id}/upload?...`` for PUT."""
    action = "upload" if _canonical_method(method) == "PUT" else "content"
    return f"{prefix.rstrip('/')}/{media_id}/{action}?{sign_local_url(secret, method, media_id, expires_at)}"


def verify_local_signature(
    secret: bytes,
    method: str,
    media_id: str,
    expires: str | int | None,
    signature: str | None,
    *,
    now: float | None = None,
) -> None:
    """Raise ``SignatureError`` unless ``signature`` matches and ``expires`` is in the future.

    ``expires``/``signature`` are the raw query values (missing ones count as malformed). The
    HMAC is checked before the expiry so the error reason never reveals anything about a forged
    URL beyond "invalid".
    """
    if expires is None or signature is None:
        raise SignatureError("missing expires or signature", reason="malformed")
    expires_text = str(expires)
    # Only canonical digits are accepted so "0100" and "100" cannot both verify.
    if not _EXPIRES_PATTERN.match(expires_text) or (len(expires_text) > 1 and expires_text[0] == "0"):
        raise SignatureError("malformed expires parameter", reason="malformed")
    expires_at = int(expires_text)
    try:
        canonical = _canonical_method(method)
    except ValueError:
        raise SignatureError("this URL is not valid for that method", reason="invalid") from None
    expected = _signature(secret, canonical, media_id, expires_at)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        raise SignatureError("invalid signature", reason="invalid")
    current = time.time() if now is None else now
    if current >= expires_at:
        raise SignatureError("this link has expired", reason="expired")
