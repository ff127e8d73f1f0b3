"""The error body everywhere, request ids, health endpoints."""

from __future__ import annotations

import pytest


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status
    assert body["code"] == code
    assert body["message"]
    assert body["requestId"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_404_error_body(tenant):
    assert_error(await tenant.get("/nope"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_error_body(tenant):
    assert_error(await tenant.request("PUT", "/posts"), 405, "METHOD_NOT_ALLOWED")


async def test_malformed_json_is_400(tenant):
    response = await tenant.post("/posts", content=b'{"platforms": [', headers={"Content-Type": "application/json"})
    body = assert_error(response, 400, "VALIDATION_FAILED")
    assert body["details"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platforms": "X"}, "platforms"),
        ({"platforms": [{"accountId": 5}]}, "platforms[0].accountId"),
        ({"platforms": [{"accountId": "soc_x"}], "content": 12}, "content"),
        (
            {"platforms": [{"accountId": "soc_x"}], "mediaItems": [{"type": "SOUND", "url": "https://a/b"}]},
            "mediaItems[0].type",
        ),
        ({"platforms": [{"accountId": "soc_x"}], "surprise": True}, "surprise"),
        ([1, 2], "body"),
    ],
)
async def test_wrong_types_and_enums_are_400(tenant, body, field):
    response = await tenant.post("/posts", json=body)
    details = assert_error(response, 400, "VALIDATION_FAILED")["details"]
    assert field in [d["field"] for d in details]


async def test_unknown_query_enum_is_400(tenant):
    assert_error(await tenant.get("/posts?status=LIVE"), 400, "VALIDATION_FAILED")
    assert_error(await tenant.get("/posts?platform=MYSPACE"), 400, "VALIDATION_FAILED")


async def test_oversized_body_is_413(tenant):
    response = await tenant.post("/posts", content=b"x" * 300_000, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_oversized_chunked_body_is_413(tenant):
    async def chunks():
        for _ in range(40):
            yield b"x" * 10_000

    response = await tenant.post("/posts", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_every_response_has_a_request_id(tenant, client):
    for response in (await tenant.get("/posts"), await client.get("/healthz"), await tenant.get("/nope")):
        assert response.headers["x-request-id"].startswith("req_")


async def test_health_and_readiness(client, app):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as root:
        assert (await root.get("/healthz")).status_code == 200
        metrics = await root.get("/metrics")
        assert metrics.status_code == 200
        assert "python_info" in metrics.text or "process_" in metrics.text


async def test_openapi_is_served(client):
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/posts" in spec["paths"]
    assert "/api/v1/posts/{post_id}/cancel" in spec["paths"]
