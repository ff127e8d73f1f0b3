"""Auth and tenancy: keys, headers, scopes, roles, multi-workspace keys, isolation."""

from __future__ import annotations

import pytest

from postwright.kit.crypto import hash_api_key


async def test_missing_key_is_401_with_error_body(client):
    response = await client.get("/posts")
    assert response.status_code == 401
    body = response.json()
    assert body["statusCode"] == 401
    assert body["code"] == "UNAUTHENTICATED"
    assert body["message"] == "Unauthorized"
    assert body["requestId"] == response.headers["x-request-id"]
    assert body["requestId"].startswith("req_")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer pw_live_not-a-real-key-at-all-000000000000"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"x-api-key": "wrong"},
        {"Authorization": "Bearer "},
    ],
)
async def test_invalid_keys_are_401(client, headers):
    response = await client.get("/posts", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHENTICATED"


async def test_bearer_and_x_api_key_both_work(tenant, client):
    assert (await client.get("/posts", headers={"Authorization": f"Bearer {tenant.key}"})).status_code == 200
    assert (await client.get("/posts", headers={"x-api-key": tenant.key})).status_code == 200


async def test_keys_are_stored_only_as_hashes(tenant, engine):
    from sqlalchemy import text

    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT key_hash, display_prefix FROM api_keys"))).all()
    hashes = {r.key_hash for r in rows}
    assert hash_api_key(tenant.key) in hashes
    assert all(tenant.key not in (r.key_hash + r.display_prefix) for r in rows)
    assert all(len(r.display_prefix) <= 12 for r in rows)


async def test_revoked_key_is_401(tenant, engine):
    from postwright.db.session import create_sessionmaker, unit_of_work
    from postwright.workspaces.service import workspaces_service

    key = await tenant.make_key()
    assert (await tenant.get("/posts", key=key)).status_code == 200
    async with unit_of_work(create_sessionmaker(engine)) as session:
        keys = await workspaces_service.list_keys(session, workspace_id=tenant.workspace_id)
        newest = max(keys, key=lambda k: k.id)
        await workspaces_service.revoke_key(session, key_id=newest.id)
    assert (await tenant.get("/posts", key=key)).status_code == 401


async def test_missing_scope_is_403_forbidden_scope(tenant):
    read_only = await tenant.make_key(scopes=["posts:read"])
    response = await tenant.post("/posts", key=read_only, json={"platforms": [{"accountId": tenant.accounts[0]["id"]}]})
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN_SCOPE"
    assert (await tenant.get("/posts", key=read_only)).status_code == 200


async def test_scheduling_needs_publish_write(tenant):
    writer = await tenant.make_key(scopes=["posts:read", "posts:write"])
    body = {
        "platforms": [{"accountId": tenant.accounts[0]["id"]}],
        "content": "x",
        "scheduledFor": "2030-01-01T00:00:00Z",
    }
    response = await tenant.post("/posts", key=writer, json=body)
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN_SCOPE"
    listed = await tenant.get("/posts")
    assert listed.json()["data"] == []


async def test_viewer_cannot_write_posts(tenant):
    viewer = await tenant.make_key(role="VIEWER", email="viewer@example.com")
    response = await tenant.post("/posts", key=viewer, json={"platforms": [{"accountId": tenant.accounts[0]["id"]}]})
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN_ROLE"
    assert (await tenant.get("/posts", key=viewer)).status_code == 200


async def test_role_cap_applies_to_owner_keys(tenant):
    capped = await tenant.make_key(role="VIEWER")
    response = await tenant.post("/posts", key=capped, json={"platforms": [{"accountId": tenant.accounts[0]["id"]}]})
    assert response.json()["code"] == "FORBIDDEN_ROLE"


async def test_multi_workspace_key_must_name_a_workspace(make_tenant):
    first = await make_tenant(accounts=1)
    second = await make_tenant(accounts=1)
    # The owner of `first` must be a member of `second` for one key to reach both.
    key = await first.make_key(email="agency@example.com", role="EDITOR")
    key_both = await second.make_key(email="agency@example.com", role="EDITOR", extra_workspaces=[first.workspace_id])

    assert (await first.get("/posts", key=key)).status_code == 200
    response = await first.get("/posts", key=key_both)
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_FAILED"
    assert "X-Workspace-Id" in response.json()["message"]

    post = await first.create_post()
    by_header = await first.get(f"/posts/{post['id']}", key=key_both, headers={"X-Workspace-Id": first.workspace_id})
    assert by_header.status_code == 200
    by_query = await first.get(f"/posts/{post['id']}?workspaceId={first.workspace_id}", key=key_both)
    assert by_query.status_code == 200
    wrong_ws = await first.get(f"/posts/{post['id']}", key=key_both, headers={"X-Workspace-Id": second.workspace_id})
    assert wrong_ws.status_code == 404
    unknown = await first.get("/posts", key=key_both, headers={"X-Workspace-Id": "wks_nope"})
    assert unknown.status_code == 404


ISOLATED_CALLS = [
    ("GET", "/posts/{post}", None),
    ("GET", "/posts/{post}/status", None),
    ("GET", "/posts/{post}/attempts", None),
    ("PATCH", "/posts/{post}", {"platforms": [{"accountId": "{account}"}]}),
    ("POST", "/posts/{post}/cancel", None),
    ("POST", "/posts/{post}/publish", None),
    ("POST", "/posts/{post}/reschedule", {"scheduledFor": "2031-01-01T00:00:00Z"}),
    ("POST", "/posts/{post}/approve", None),
    ("POST", "/posts/{post}/reject", None),
    ("POST", "/posts/{post}/targets/{target}/retry", None),
    ("POST", "/posts/{post}/targets/{target}/first-comment/retry", None),
    ("DELETE", "/posts/{post}", None),
    ("GET", "/social-accounts/{account}", None),
    ("DELETE", "/social-accounts/{account}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ISOLATED_CALLS)
async def test_other_workspace_objects_are_404(make_tenant, method, path, body):
    owner = await make_tenant(accounts=1)
    intruder = await make_tenant(accounts=1)
    post = await owner.create_post(scheduledFor="2031-01-01T00:00:00Z")
    ids = {"post": post["id"], "target": post["targets"][0]["id"], "account": owner.accounts[0]["id"]}
    url = path.format(**ids)
    json_body = None
    if body is not None:
        json_body = {
            k: ([{"accountId": intruder.accounts[0]["id"]}] if k == "platforms" else v) for k, v in body.items()
        }
    response = await intruder.request(method, url, json=json_body)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "NOT_FOUND"
    unchanged = await owner.get(f"/posts/{post['id']}")
    assert unchanged.json()["status"] == "SCHEDULED"
    assert unchanged.json()["updatedAt"] == post["updatedAt"]


async def test_other_workspace_lists_are_empty_and_accounts_unusable(make_tenant):
    owner = await make_tenant(accounts=1)
    intruder = await make_tenant(accounts=1)
    await owner.create_post()
    assert (await intruder.get("/posts")).json()["data"] == []
    accounts = (await intruder.get("/social-accounts")).json()["data"]
    assert [a["id"] for a in accounts] == [intruder.accounts[0]["id"]]
    response = await intruder.post("/posts", json={"platforms": [{"accountId": owner.accounts[0]["id"]}]})
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "platforms[0].accountId"
    audit = (await intruder.get("/audit-log")).json()["data"]
    assert all(e["workspaceId"] == intruder.workspace_id for e in audit)
