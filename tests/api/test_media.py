"""Media library through the API: uploads, completion checks, ingest by URL, content URLs, deletion."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from PIL import Image
from sqlalchemy import text

from .helpers import fetch, future


def png(width: int = 16, height: int = 9) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    """A plain-HTTP server on 127.0.0.1 that serves /image.png, /redirect-private and /text."""
    body = png(32, 32)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/image.png":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/redirect-private":
                self.send_response(302)
                self.send_header("Location", "http://10.0.0.7/secret.png")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"hello, not media")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(autouse=True)
def loopback_fetch(app):
    """Enable the test-only plain-HTTP-to-loopback switch for these tests, and restore it after."""
    previous = app.state.media.allow_loopback_http
    app.state.media.allow_loopback_http = True
    yield
    app.state.media.allow_loopback_http = previous


async def upload(tenant, data: bytes, mime: str = "image/png", declared: int | None = None) -> dict:
    presign = await tenant.post(
        "/media/presign", json={"filename": "a.png", "mimeType": mime, "sizeBytes": declared or len(data)}
    )
    assert presign.status_code == 201, presign.text
    body = presign.json()
    url = urlsplit(body["uploadUrl"])
    put = await tenant.client.put(
        f"{url.path.removeprefix('/api/v1')}?{url.query}", content=data, headers={"Content-Type": mime}
    )
    return {"presign": body, "put": put}


async def test_upload_round_trip_local(tenant, engine):
    data = png(40, 20)
    result = await upload(tenant, data)
    assert result["presign"]["id"].startswith("med_")
    assert result["presign"]["media"]["status"] == "PENDING_UPLOAD"
    assert result["put"].status_code == 200
    media_id = result["presign"]["id"]
    done = await tenant.post(f"/media/{media_id}/complete")
    assert done.status_code == 200, done.text
    asset = done.json()
    assert asset["status"] == "READY"
    assert (asset["kind"], asset["mimeType"], asset["width"], asset["height"]) == ("IMAGE", "image/png", 40, 20)
    assert asset["sizeBytes"] == len(data)
    assert asset["checksum"].startswith("sha256:")
    got = (await tenant.get(f"/media/{media_id}")).json()
    content_url = urlsplit(got["url"])
    content = await tenant.client.get(f"{content_url.path.removeprefix('/api/v1')}?{content_url.query}")
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"] == "image/png"


async def test_upload_url_is_signed(tenant):
    result = await upload(tenant, png())
    url = urlsplit(result["presign"]["uploadUrl"])
    tampered = url.query.replace("signature=", "signature=x")
    response = await tenant.client.put(f"{url.path.removeprefix('/api/v1')}?{tampered}", content=png())
    assert response.status_code == 404
    no_sig = await tenant.client.put(f"{url.path.removeprefix('/api/v1')}", content=png())
    assert no_sig.status_code == 404


async def test_content_url_tampered_or_expired_is_404(tenant):
    result = await upload(tenant, png())
    media_id = result["presign"]["id"]
    await tenant.post(f"/media/{media_id}/complete")
    good = urlsplit((await tenant.get(f"/media/{media_id}")).json()["url"])
    path = good.path.removeprefix("/api/v1")
    assert (await tenant.client.get(f"{path}?expires=1&signature=abc")).status_code == 404
    params = dict(p.split("=", 1) for p in good.query.split("&"))
    expired = f"{path}?expires={int(params['expires']) - 10_000}&signature={params['signature']}"
    assert (await tenant.client.get(expired)).status_code == 404


async def test_size_mismatch_is_refused(tenant):
    result = await upload(tenant, png(), declared=len(png()) + 5)
    assert result["put"].status_code == 400
    done = await tenant.post(f"/media/{result['presign']['id']}/complete")
    assert done.status_code == 400
    assert "Nothing was uploaded" in done.json()["message"]


async def test_type_mismatch_marks_failed(tenant):
    fake_video = png()
    result = await upload(tenant, fake_video, mime="video/mp4")
    assert result["put"].status_code == 200
    done = await tenant.post(f"/media/{result['presign']['id']}/complete")
    assert done.status_code == 400
    assert done.json()["code"] == "VALIDATION_FAILED"
    got = (await tenant.get(f"/media/{result['presign']['id']}")).json()
    assert got["status"] == "FAILED"


async def test_presign_refuses_unknown_type_and_huge_size(tenant):
    assert (
        await tenant.post(
            "/media/presign", json={"filename": "x.exe", "mimeType": "application/x-msdownload", "sizeBytes": 10}
        )
    ).status_code == 400
    assert (
        await tenant.post("/media/presign", json={"filename": "x.png", "mimeType": "image/png", "sizeBytes": 10**10})
    ).status_code == 400


async def test_from_url_ingests_and_sniffs(tenant, file_server):
    response = await tenant.post(
        "/media/from-url", json={"url": f"{file_server}/image.png", "type": "image", "altText": "logo"}
    )
    assert response.status_code == 201, response.text
    asset = response.json()
    assert (asset["kind"], asset["mimeType"], asset["width"], asset["status"]) == ("IMAGE", "image/png", 32, "READY")
    assert asset["sourceUrl"] == f"{file_server}/image.png"
    assert asset["altText"] == "logo"


async def test_from_url_refuses_non_media(tenant, file_server):
    response = await tenant.post("/media/from-url", json={"url": f"{file_server}/text"})
    assert response.status_code == 400
    assert (await tenant.get("/media")).json()["data"] == []


async def test_from_url_refuses_redirect_to_private_address(tenant, file_server, monkeypatch):
    attempted: list[object] = []
    real = socket.socket.connect

    def spy(self, address):
        attempted.append(address)
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    response = await tenant.post("/media/from-url", json={"url": f"{file_server}/redirect-private"})
    assert response.status_code == 400
    assert "private" in response.json()["message"].lower()
    assert all(a[0] == "127.0.0.1" for a in attempted if isinstance(a, tuple))
    assert (await tenant.get("/media")).json()["data"] == []


async def test_from_url_refuses_name_resolving_to_private(tenant, app):
    async def resolver(host: str, port: int) -> list[str]:
        return ["192.168.1.20"]

    app.state.media.resolver = resolver
    try:
        response = await tenant.post("/media/from-url", json={"url": "https://cdn.example.test/a.png"})
    finally:
        app.state.media.resolver = None
    assert response.status_code == 400
    assert (await tenant.get("/media")).json()["data"] == []


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:10.0.0.1]/a.png",
        "ftp://example.com/a.png",
        "https://user:pw@example.com/a.png",
    ],
)
async def test_from_url_refusals_store_nothing(tenant, url):
    response = await tenant.post("/media/from-url", json={"url": url})
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_FAILED"
    assert (await tenant.get("/media")).json()["data"] == []


async def test_media_items_in_post_create(tenant, file_server):
    response = await tenant.post(
        "/posts",
        json={
            "content": "with media",
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            "mediaItems": [{"type": "IMAGE", "url": f"{file_server}/image.png", "altText": "a"}],
        },
    )
    assert response.status_code == 201, response.text
    media = response.json()["media"]
    assert len(media) == 1 and media[0]["order"] == 0
    asset = (await tenant.get(f"/media/{media[0]['mediaAssetId']}")).json()
    assert asset["altText"] == "a"


async def test_media_items_refusal_names_the_item(tenant, file_server):
    response = await tenant.post(
        "/posts",
        json={
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            "mediaItems": [{"type": "image", "url": f"{file_server}/text"}],
        },
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "mediaItems[0].url"
    assert (await tenant.get("/posts")).json()["data"] == []


async def test_media_items_of_a_refused_post_leave_no_stored_file(tenant, app, file_server, engine):
    response = await tenant.post(
        "/posts",
        json={
            "content": "x" * 300,  # over X's limit: refused at scheduling, after the item was stored
            "scheduledFor": future(hours=1),
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            "mediaItems": [{"type": "image", "url": f"{file_server}/image.png"}],
        },
    )
    assert response.status_code == 400, response.text
    rows = await fetch(engine, "SELECT count(*) AS n FROM media_assets WHERE workspace_id = :w", w=tenant.workspace_id)
    assert rows[0].n == 0
    folder = app.state.media.storage.root / tenant.workspace_id
    assert not folder.exists() or not any(folder.iterdir())


async def test_list_media_paging_and_kind(tenant, file_server):
    for _ in range(3):
        await tenant.post("/media/from-url", json={"url": f"{file_server}/image.png"})
    page = (await tenant.get("/media?limit=2")).json()
    assert len(page["data"]) == 2 and page["pagination"]["hasNextPage"] is True
    assert (await tenant.get("/media?kind=VIDEO")).json()["data"] == []
    assert len((await tenant.get("/media?kind=IMAGE")).json()["data"]) == 3


async def test_delete_media_conflicts_while_scheduled(tenant, file_server):
    asset = (await tenant.post("/media/from-url", json={"url": f"{file_server}/image.png"})).json()
    post = await tenant.create_post(scheduledFor=future(hours=1), mediaIds=[asset["id"]])
    assert (await tenant.delete(f"/media/{asset['id']}")).status_code == 409
    await tenant.post(f"/posts/{post['id']}/cancel")
    assert (await tenant.delete(f"/media/{asset['id']}")).status_code == 200
    assert (await tenant.get(f"/media/{asset['id']}")).status_code == 404


async def test_stored_file_removed_after_commit(tenant, app, file_server):
    asset = (await tenant.post("/media/from-url", json={"url": f"{file_server}/image.png"})).json()
    storage = app.state.media.storage
    key = f"{tenant.workspace_id}/{asset['id']}"
    assert await storage.exists(key)
    assert (await tenant.delete(f"/media/{asset['id']}")).status_code == 200
    assert not await storage.exists(key)


async def test_storage_failure_never_fails_delete_and_is_retried(tenant, app, engine, file_server, monkeypatch):
    from postwright.db.session import create_sessionmaker, unit_of_work
    from postwright.media.service import media_service

    asset = (await tenant.post("/media/from-url", json={"url": f"{file_server}/image.png"})).json()
    storage = app.state.media.storage
    key = f"{tenant.workspace_id}/{asset['id']}"
    real_delete = storage.delete

    async def broken(_key: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(storage, "delete", broken)
    response = await tenant.delete(f"/media/{asset['id']}")
    assert response.status_code == 200
    rows = await fetch(engine, "SELECT storage_key FROM storage_deletions WHERE storage_key = :k", k=key)
    assert len(rows) == 1
    assert await storage.exists(key)

    monkeypatch.setattr(storage, "delete", real_delete)
    async with unit_of_work(create_sessionmaker(engine)) as session:
        await media_service.sweep(session, app.state.media)
    assert not await storage.exists(key)
    assert await fetch(engine, "SELECT 1 FROM storage_deletions WHERE storage_key = :k", k=key) == []


async def test_orphaned_uploads_are_swept(tenant, app, engine):
    from postwright.db.session import create_sessionmaker, unit_of_work
    from postwright.media.service import media_service

    result = await upload(tenant, png())
    media_id = result["presign"]["id"]
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE media_assets SET created_at = now() - interval '25 hours' WHERE id = :id"), {"id": media_id}
        )
    async with unit_of_work(create_sessionmaker(engine)) as session:
        await media_service.sweep(session, app.state.media)
    await asyncio.sleep(0)
    assert (await tenant.get(f"/media/{media_id}")).status_code == 404
    assert not await app.state.media.storage.exists(f"{tenant.workspace_id}/{media_id}")


async def test_media_needs_media_write(tenant):
    key = await tenant.make_key(scopes=["posts:read"])
    response = await tenant.post(
        "/media/presign", key=key, json={"filename": "a.png", "mimeType": "image/png", "sizeBytes": 5}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN_SCOPE"


async def test_other_workspace_media_is_404(make_tenant, file_server):
    owner = await make_tenant(accounts=0)
    other = await make_tenant(accounts=0)
    asset = (await owner.post("/media/from-url", json={"url": f"{file_server}/image.png"})).json()
    for method, path in (
        ("GET", f"/media/{asset['id']}"),
        ("DELETE", f"/media/{asset['id']}"),
        ("POST", f"/media/{asset['id']}/complete"),
    ):
        assert (await other.request(method, path)).status_code == 404
    assert (await other.get("/media")).json()["data"] == []


async def test_media_items_on_patch_are_ingested_and_ordered_first(tenant, file_server):
    existing = (await tenant.post("/media/from-url", json={"url": f"{file_server}/image.png"})).json()
    post = await tenant.create_post(mediaIds=[existing["id"]])
    response = await tenant.patch(
        f"/posts/{post['id']}",
        json={
            "content": "edited with media",
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            "mediaIds": [existing["id"]],
            "mediaItems": [{"type": "image", "url": f"{file_server}/image.png"}],
        },
    )
    assert response.status_code == 200, response.text
    media = response.json()["media"]
    assert len(media) == 2
    assert media[1]["mediaAssetId"] == existing["id"]
    assert media[0]["mediaAssetId"] != existing["id"]


async def test_media_items_on_patch_of_published_post_is_refused_before_fetching(tenant, engine, file_server):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE posts SET status = 'PUBLISHED' WHERE id = :id"), {"id": post["id"]})
    response = await tenant.patch(
        f"/posts/{post['id']}",
        json={
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            "mediaItems": [{"type": "image", "url": f"{file_server}/image.png"}],
        },
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_STATE"
    assert (await tenant.get("/media")).json()["data"] == []
