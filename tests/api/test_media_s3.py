"""The same upload round trip with POSTWRIGHT_STORAGE=s3, against moto's S3 server on loopback."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from PIL import Image

from postwright.app import create_app, wire_domains
from postwright.config import Settings


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
async def s3_client(
    settings: Settings, engine, app, moto_endpoint: str
) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    s3_settings = settings.model_copy(
        update={
            "storage": "s3",
            "s3_bucket": "pw-media",
            "s3_endpoint_url": moto_endpoint,
            "s3_region": "us-east-1",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
        }
    )
    s3_app = create_app(s3_settings, engine=engine)
    await s3_app.state.media.storage.ensure_bucket()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=s3_app), base_url="http://test/api/v1") as client:
        yield client, s3_app
    # create_app wires the posts domain to the newest app's media storage; give it back to the shared app.
    wire_domains(app)


async def test_s3_presigned_round_trip(s3_client, tenant):
    client, _ = s3_client
    buffer = io.BytesIO()
    Image.new("RGB", (12, 7)).save(buffer, "PNG")
    data = buffer.getvalue()
    headers = {"Authorization": f"Bearer {tenant.key}"}
    presign = await client.post(
        "/media/presign", headers=headers, json={"filename": "a.png", "mimeType": "image/png", "sizeBytes": len(data)}
    )
    assert presign.status_code == 201, presign.text
    upload_url = presign.json()["uploadUrl"]
    assert upload_url.startswith("http://127.0.0.1:")  # a presigned S3 URL, not this server
    async with httpx.AsyncClient() as raw:
        put = await raw.put(upload_url, content=data, headers=presign.json()["headers"])
        assert put.status_code == 200, put.text
        done = await client.post(f"/media/{presign.json()['id']}/complete", headers=headers)
        assert done.status_code == 200, done.text
        assert (done.json()["width"], done.json()["height"]) == (12, 7)
        got = (await client.get(f"/media/{presign.json()['id']}", headers=headers)).json()
        assert got["url"].startswith("http://127.0.0.1:")
        fetched = await raw.get(got["url"])
        assert fetched.content == data
