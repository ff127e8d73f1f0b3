"""Storage backends (local filesystem, S3 via moto's server on loopback) and local URL signing."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from postwright.media.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    SignatureError,
    Storage,
    local_media_path,
    sign_local_url,
    validate_key,
    verify_local_signature,
)

BAD_KEYS = [
    "",
    "/abs/path",
    "../escape",
    "a/../../escape",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "a b",
    "ümlaut",
    "a\x00b",
    "x" * 513,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize("key", ["a", "ws_01/media_01HX.png", "a.b-c_d/e", "x" * 512])
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


# --------------------------------------------------------------------------------------------
# Shared round-trip contract, run against both backends
# --------------------------------------------------------------------------------------------


async def _round_trip(storage: Storage, png: bytes) -> None:
    assert isinstance(storage, Storage)
    key = f"ws_test/{uuid.uuid4().hex}.png"
    assert await storage.exists(key) is False
    assert await storage.size(key) is None
    with pytest.raises(ObjectNotFound):
        await storage.get(key)

    await storage.put(key, png, "image/png")
    assert await storage.get(key) == png
    assert await storage.size(key) == len(png)
    assert await storage.exists(key) is True

    await storage.put(key, b"replaced", "image/png")
    assert await storage.get(key) == b"replaced"
    assert await storage.size(key) == len(b"replaced")

    await storage.delete(key)
    assert await storage.exists(key) is False
    await storage.delete(key)  # idempotent

    for bad in ("../x", "/etc/passwd"):
        with pytest.raises(InvalidKey):
            await storage.put(bad, b"x", "image/png")
        with pytest.raises(InvalidKey):
            await storage.get(bad)


async def test_local_round_trip(tmp_path: Path, png_bytes: bytes) -> None:
    storage = LocalStorage(tmp_path / "media")
    await _round_trip(storage, png_bytes)
    # No temp files left behind by the atomic writes.
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []


async def test_local_presign_defers_to_signed_urls(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert await storage.presign_put("a/b.png", "image/png", 10, 600) is None
    assert await storage.presign_get("a/b.png", 600) is None
    with pytest.raises(ValueError):
        await storage.presign_get("a/b.png", 0)
    with pytest.raises(InvalidKey):
        await storage.presign_get("../b.png", 60)


async def test_local_path_stays_inside_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    await storage.put("inside/file.bin", b"1", "application/octet-stream")
    assert storage.path("inside/file.bin") == (tmp_path / "root" / "inside" / "file.bin").resolve()

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (tmp_path / "root" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey):
        storage.path("link/secret.txt")
    with pytest.raises(InvalidKey):
        await storage.get("link/secret.txt")


# --------------------------------------------------------------------------------------------
# S3 against moto's server mode on 127.0.0.1
# --------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def s3_storage(moto_endpoint: str) -> AsyncIterator[S3Storage]:
    storage = S3Storage(
        f"postwright-{uuid.uuid4().hex[:12]}",
        endpoint_url=moto_endpoint,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
    )
    await storage.ensure_bucket()
    await storage.ensure_bucket()  # idempotent
    yield storage


async def test_s3_round_trip(s3_storage: S3Storage, png_bytes: bytes) -> None:
    await _round_trip(s3_storage, png_bytes)


async def test_s3_presigned_put_and_get(s3_storage: S3Storage, png_bytes: bytes) -> None:
    key = f"ws_test/{uuid.uuid4().hex}.png"
    put_url = await s3_storage.presign_put(key, "image/png", len(png_bytes), 300)
    assert put_url is not None and put_url.startswith("http://127.0.0.1:")
    signed_headers = parse_qs(urlsplit(put_url).query)["X-Amz-SignedHeaders"][0]
    assert "content-type" in signed_headers.split(";")

    async with aiohttp.ClientSession() as http:
        async with http.put(put_url, data=png_bytes, headers={"Content-Type": "image/png"}) as resp:
            assert resp.status == 200, await resp.text()
        assert await s3_storage.size(key) == len(png_bytes)

        get_url = await s3_storage.presign_get(key, 300)
        assert get_url is not None
        async with http.get(get_url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "image/png"
            assert await resp.read() == png_bytes


async def test_s3_public_endpoint_for_presigned_urls(moto_endpoint: str) -> None:
    storage = S3Storage(
        "bucket",
        endpoint_url=moto_endpoint,
        access_key="testing",
        secret_key="testing",
        public_endpoint_url="https://media.example.test",
    )
    url = await storage.presign_get("a/b.png", 60)
    assert url is not None and url.startswith("https://media.example.test/bucket/a/b.png?")
    with pytest.raises(ValueError):
        await storage.presign_put("a/b.png", "image/png", 1, 8 * 24 * 3600)


# --------------------------------------------------------------------------------------------
# Local signed URLs
# --------------------------------------------------------------------------------------------

SECRET = b"s" * 32


def _parts(query: str) -> tuple[str, str]:
    params = parse_qs(query, strict_parsing=True)
    return params["expires"][0], params["signature"][0]


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_signature_round_trip(method: str) -> None:
    expires_at = int(time.time()) + 600
    expires, signature = _parts(sign_local_url(SECRET, method, "med_01", expires_at))
    assert expires == str(expires_at)
    verify_local_signature(SECRET, method, "med_01", expires, signature)
    verify_local_signature(SECRET, method.lower(), "med_01", int(expires), signature)


def test_head_uses_the_get_signature() -> None:
    expires, signature = _parts(sign_local_url(SECRET, "GET", "med_01", int(time.time()) + 60))
    verify_local_signature(SECRET, "HEAD", "med_01", expires, signature)


def test_signature_expiry() -> None:
    expires_at = 1_700_000_000
    expires, signature = _parts(sign_local_url(SECRET, "GET", "med_01", expires_at))
    verify_local_signature(SECRET, "GET", "med_01", expires, signature, now=expires_at - 1)
    for now in (expires_at, expires_at + 3600):
        with pytest.raises(SignatureError) as info:
            verify_local_signature(SECRET, "GET", "med_01", expires, signature, now=now)
        assert info.value.reason == "expired"


@pytest.mark.parametrize(
    ("method", "media_id", "expires_delta", "signature_mangle", "secret", "reason"),
    [
        ("PUT", "med_01", 0, None, SECRET, "invalid"),  # a GET link used to upload
        ("GET", "med_02", 0, None, SECRET, "invalid"),  # another media id
        ("GET", "med_01", 1, None, SECRET, "invalid"),  # extended expiry
        ("GET", "med_01", 0, "flip", SECRET, "invalid"),
        ("GET", "med_01", 0, "truncate", SECRET, "invalid"),
        ("GET", "med_01", 0, "", SECRET, "invalid"),
        ("GET", "med_01", 0, None, b"other-secret", "invalid"),
        ("DELETE", "med_01", 0, None, SECRET, "invalid"),
    ],
)
def test_signature_tampering(
    method: str, media_id: str, expires_delta: int, signature_mangle: str | None, secret: bytes, reason: str
) -> None:
    expires_at = int(time.time()) + 600
    expires, signature = _parts(sign_local_url(SECRET, "GET", "med_01", expires_at))
    if signature_mangle == "flip":
        signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    elif signature_mangle == "truncate":
        signature = signature[:-1]
    elif signature_mangle == "":
        signature = ""
    with pytest.raises(SignatureError) as info:
        verify_local_signature(secret, method, media_id, str(int(expires) + expires_delta), signature)
    assert info.value.reason == reason


@pytest.mark.parametrize("expires", [None, "", "abc", "-5", "0123", "1e10", "9" * 13, " 123"])
def test_signature_malformed_expires(expires: str | None) -> None:
    _, signature = _parts(sign_local_url(SECRET, "GET", "med_01", int(time.time()) + 600))
    with pytest.raises(SignatureError) as info:
        verify_local_signature(SECRET, "GET", "med_01", expires, signature)
    assert info.value.reason == "malformed"


def test_signature_missing() -> None:
    with pytest.raises(SignatureError) as info:
        verify_local_signature(SECRET, "GET", "med_01", "123", None)
    assert info.value.reason == "malformed"


def test_local_media_path() -> None:
    expires_at = int(time.time()) + 600
    put_path = local_media_path(SECRET, "PUT", "med_01", expires_at)
    get_path = local_media_path(SECRET, "GET", "med_01", expires_at)
    assert put_path.startswith("/api/v1/media/med_01/upload?expires=")
    assert get_path.startswith("/api/v1/media/med_01/content?expires=")
    expires, signature = _parts(urlsplit(put_path).query)
    verify_local_signature(SECRET, "PUT", "med_01", expires, signature)


def test_signing_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError):
        sign_local_url(b"", "GET", "med_01", 1)
    with pytest.raises(ValueError):
        sign_local_url(SECRET, "POST", "med_01", 1)
    with pytest.raises(ValueError):
        sign_local_url(SECRET, "GET", "med\n01", 1)
