"""POST /posts: both shapes, validation, time rules, scheduling with a queued job, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from .helpers import fetch, future, job_for, parse


async def test_flat_shape_creates_draft(tenant):
    acc = tenant.accounts
    response = await tenant.post(
        "/posts",
        json={
            "content": "Launch day",
            "timezone": "Europe/Stockholm",
            "platforms": [
                {"accountId": acc[0]["id"], "firstComment": "link in bio", "platformOptions": {"platform": "X"}},
                {"accountId": acc[1]["id"], "captionOverride": "Other text"},
            ],
        },
    )
    assert response.status_code == 201
    post = response.json()
    assert post["id"].startswith("post_")
    assert post["status"] == "DRAFT"
    assert post["createdViaFlatShape"] is True
    assert post["createdViaApi"] is True
    assert post["caption"] == "Launch day"
    assert post["workflowId"] is None and post["pendingWorkflowId"] is None
    assert post["createdByUserId"] == tenant.user_id
    assert post["workspaceId"] == tenant.workspace_id
    t0, t1 = post["targets"]
    assert t0["id"].startswith("tgt_") and t0["status"] == "DRAFT" and t0["platform"] == "X"
    assert t0["firstComment"] == "link in bio" and t0["firstCommentAttempt"] == 0
    assert t0["platformOptions"] == {"platform": "X"}
    assert t1["captionOverride"] == "Other text"
    assert t1["scheduledFor"] is None
    for key in (
        "firstCommentError",
        "externalPostId",
        "externalUrl",
        "errorCode",
        "errorMessage",
        "lastAttemptAt",
        "publishedAt",
    ):
        assert t0[key] is None
    assert t0["attemptCount"] == 0


async def test_nested_shape(tenant):
    response = await tenant.post(
        "/posts",
        json={
            "caption": "Nested",
            "targets": [{"socialAccountId": tenant.accounts[0]["id"], "firstComment": "hi"}],
        },
    )
    assert response.status_code == 201
    post = response.json()
    assert post["createdViaFlatShape"] is False
    assert post["caption"] == "Nested"
    assert post["targets"][0]["firstComment"] == "hi"


async def test_nested_validation_errors_name_nested_fields(tenant):
    response = await tenant.post("/posts", json={"caption": "x", "targets": [{"socialAccountId": "soc_nope"}]})
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "targets[0].socialAccountId"


async def test_draft_scheduled_for_pins_calendar(tenant):
    post = await tenant.create_post(draftScheduledFor="2031-03-01T10:00:00Z")
    assert post["status"] == "DRAFT"
    assert post["scheduledAt"] == "2031-03-01T10:00:00Z"
    assert post["workflowId"] is None
    assert all(t["scheduledFor"] is None for t in post["targets"])


async def test_scheduled_post_enqueues_job_in_same_transaction(tenant, engine):
    post = await tenant.create_post(scheduledFor="2031-01-01T09:00:00Z")
    assert post["status"] == "SCHEDULED"
    assert post["scheduledAt"] == "2031-01-01T09:00:00Z"
    assert post["workflowId"].startswith("wf_")
    assert post["pendingWorkflowId"] is None
    assert all(t["status"] == "SCHEDULED" and t["scheduledFor"] == "2031-01-01T09:00:00Z" for t in post["targets"])
    job = await job_for(engine, post["workflowId"])
    assert job["entrypoint"] == "publishing.dispatch_post"
    assert job["payload"] == {"postId": post["id"], "generation": 1}
    assert abs((job["execute_after"] - datetime(2031, 1, 1, 9, tzinfo=UTC)).total_seconds()) < 5


async def test_failed_create_leaves_no_job_and_no_post(tenant, engine):
    before = await fetch(engine, "SELECT count(*) AS n FROM pgqueuer")
    response = await tenant.post(
        "/posts",
        json={
            "content": "x" * 300,
            "scheduledFor": future(hours=1),
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
        },
    )
    assert response.status_code == 400  # X allows 280 characters
    after = await fetch(engine, "SELECT count(*) AS n FROM pgqueuer")
    assert after[0].n == before[0].n
    assert (await tenant.get("/posts")).json()["data"] == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"content": "x" * 10001}, "content"),
        ({"platforms": [{"accountId": "A", "captionOverride": "x" * 10001}]}, "platforms[0].captionOverride"),
        ({"platforms": [{"accountId": "A", "firstComment": "x" * 2001}]}, "platforms[0].firstComment"),
        (
            {"mediaItems": [{"type": "image", "url": "https://example.com/a.png", "altText": "x" * 1001}]},
            "mediaItems[0].altText",
        ),
        ({"platforms": []}, "platforms"),
    ],
)
async def test_length_limits(tenant, patch, field):
    body = {"content": "ok", "platforms": [{"accountId": tenant.accounts[0]["id"]}]}
    body.update(patch)
    for platform in body["platforms"]:
        if platform.get("accountId") == "A":
            platform["accountId"] = tenant.accounts[0]["id"]
    response = await tenant.post("/posts", json=body)
    assert response.status_code == 400, response.text
    assert field in [d["field"] for d in response.json()["details"]]


async def test_limits_at_the_boundary_are_accepted(tenant):
    post = await tenant.create_post(
        content="x" * 10000, platforms=[{"accountId": tenant.accounts[0]["id"], "firstComment": "y" * 2000}]
    )
    assert len(post["caption"]) == 10000


async def test_missing_platforms_is_400(tenant):
    response = await tenant.post("/posts", json={"content": "x"})
    assert response.status_code == 400
    assert "platforms" in [d["field"] for d in response.json()["details"]]


async def test_account_listed_twice_is_400(tenant):
    acc = tenant.accounts[0]["id"]
    response = await tenant.post("/posts", json={"platforms": [{"accountId": acc}, {"accountId": acc}]})
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "platforms[1].accountId"


async def test_inactive_account_is_400(tenant, engine):
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE social_accounts SET status='EXPIRED' WHERE id=:id"), {"id": tenant.accounts[0]["id"]}
        )
    response = await tenant.post("/posts", json={"platforms": [{"accountId": tenant.accounts[0]["id"]}]})
    assert response.status_code == 400
    assert "EXPIRED" in response.json()["details"][0]["message"]


async def test_unknown_media_is_400(tenant):
    response = await tenant.post(
        "/posts",
        json={"platforms": [{"accountId": tenant.accounts[0]["id"]}], "mediaIds": ["med_01HZZZZZZZZZZZZZZZZZZZZZZZ"]},
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "mediaIds"


async def test_other_workspace_media_is_400(make_tenant, engine):
    owner = await make_tenant(accounts=1)
    other = await make_tenant(accounts=1)
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO media_assets (id, workspace_id, kind, mime_type, status, storage_key, created_at, updated_at) "
                "VALUES ('med_OWNED1', :ws, 'IMAGE', 'image/png', 'READY', 'k', now(), now())"
            ),
            {"ws": owner.workspace_id},
        )
    ok = await owner.post(
        "/posts", json={"platforms": [{"accountId": owner.accounts[0]["id"]}], "mediaIds": ["med_OWNED1"]}
    )
    assert ok.status_code == 201
    assert ok.json()["media"] == [
        {"postId": ok.json()["id"], "mediaAssetId": "med_OWNED1", "order": 0, "altText": None}
    ]
    refused = await other.post(
        "/posts", json={"platforms": [{"accountId": other.accounts[0]["id"]}], "mediaIds": ["med_OWNED1"]}
    )
    assert refused.status_code == 400


# ---- time rules ----------------------------------------------------------------------------------


async def test_naive_time_without_timezone_is_400(tenant):
    response = await tenant.post(
        "/posts", json={"platforms": [{"accountId": tenant.accounts[0]["id"]}], "scheduledFor": "2031-06-01T09:00:00"}
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "scheduledFor"


async def test_naive_time_is_read_in_timezone(tenant):
    post = await tenant.create_post(scheduledFor="2031-06-01T09:00:00", timezone="Europe/Stockholm")
    assert post["scheduledAt"] == "2031-06-01T07:00:00Z"
    assert post["timezone"] == "Europe/Stockholm"


async def test_offset_time_is_stored_in_utc(tenant):
    post = await tenant.create_post(scheduledFor="2031-06-01T09:00:00-05:00")
    assert post["scheduledAt"] == "2031-06-01T14:00:00Z"


async def test_dst_gap_is_400(tenant):
    response = await tenant.post(
        "/posts",
        json={
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            "scheduledFor": "2031-03-30T02:30:00",
            "timezone": "Europe/Stockholm",
        },
    )
    assert response.status_code == 400
    assert "daylight" in response.json()["message"]


async def test_unknown_timezone_is_400(tenant):
    response = await tenant.post(
        "/posts", json={"platforms": [{"accountId": tenant.accounts[0]["id"]}], "timezone": "Mars/Olympus"}
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "timezone"


async def test_garbage_time_is_400(tenant):
    response = await tenant.post(
        "/posts", json={"platforms": [{"accountId": tenant.accounts[0]["id"]}], "scheduledFor": "next tuesday"}
    )
    assert response.status_code == 400


async def test_more_than_60s_past_is_400(tenant):
    response = await tenant.post(
        "/posts", json={"platforms": [{"accountId": tenant.accounts[0]["id"]}], "scheduledFor": future(seconds=-90)}
    )
    assert response.status_code == 400
    assert "past" in response.json()["message"]


async def test_within_60s_past_is_due_now(tenant):
    before = datetime.now(UTC)
    post = await tenant.create_post(scheduledFor=future(seconds=-30))
    assert post["status"] == "SCHEDULED"
    assert parse(post["scheduledAt"]) >= before - timedelta(seconds=1)


# ---- platform rules at schedule time, not on drafts ----------------------------------------------


async def test_platform_rules_skip_drafts_but_block_scheduling(tenant):
    long = "y" * 281
    draft = await tenant.create_post(content=long)
    assert draft["status"] == "DRAFT"
    response = await tenant.post(
        "/posts",
        json={"content": long, "scheduledFor": future(hours=1), "platforms": [{"accountId": tenant.accounts[0]["id"]}]},
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "targets[0]"
    assert "280" in response.json()["details"][0]["message"]
    publish = await tenant.post(f"/posts/{draft['id']}/publish")
    assert publish.status_code == 400
    assert (await tenant.get(f"/posts/{draft['id']}")).json()["status"] == "DRAFT"


# ---- idempotency ---------------------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_response(tenant, engine):
    body = {"content": "once", "platforms": [{"accountId": tenant.accounts[0]["id"]}]}
    first = await tenant.post("/posts", json=body, headers={"Idempotency-Key": "abc-1"})
    second = await tenant.post("/posts", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    rows = await fetch(engine, "SELECT count(*) AS n FROM posts WHERE workspace_id = :ws", ws=tenant.workspace_id)
    assert rows[0].n == 1


async def test_idempotency_key_with_other_body_is_422(tenant):
    body = {"content": "once", "platforms": [{"accountId": tenant.accounts[0]["id"]}]}
    await tenant.post("/posts", json=body, headers={"Idempotency-Key": "abc-2"})
    other = await tenant.post("/posts", json={**body, "content": "twice"}, headers={"Idempotency-Key": "abc-2"})
    assert other.status_code == 422
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert other.json()["requestId"] == other.headers["x-request-id"]


async def test_idempotency_keys_are_per_api_key(make_tenant):
    a = await make_tenant(accounts=1)
    b = await make_tenant(accounts=1)
    ra = await a.post(
        "/posts", json={"platforms": [{"accountId": a.accounts[0]["id"]}]}, headers={"Idempotency-Key": "same"}
    )
    rb = await b.post(
        "/posts", json={"platforms": [{"accountId": b.accounts[0]["id"]}]}, headers={"Idempotency-Key": "same"}
    )
    assert ra.status_code == rb.status_code == 201
    assert ra.json()["id"] != rb.json()["id"]


async def test_failed_request_does_not_burn_the_key(tenant):
    bad = await tenant.post("/posts", json={"platforms": []}, headers={"Idempotency-Key": "k3"})
    assert bad.status_code == 400
    good = await tenant.post("/posts", json={"platforms": []}, headers={"Idempotency-Key": "k3"})
    assert good.status_code == 400  # re-executed, not replayed
    assert "idempotent-replayed" not in good.headers


async def test_a_response_lost_after_commit_is_never_run_again(tenant, engine, monkeypatch):
    """The process dies between the request's commit and storing its response; the lock then runs out."""
    from postwright.api.idempotency import IdempotencyMiddleware

    async def died_before_storing(self, record_id, owner, captured):
        return None

    body = {"content": "committed once", "platforms": [{"accountId": tenant.accounts[0]["id"]}]}
    with monkeypatch.context() as patched:
        patched.setattr(IdempotencyMiddleware, "_finish", died_before_storing)
        first = await tenant.post("/posts", json=body, headers={"Idempotency-Key": "lost-1"})
    assert first.status_code == 201
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE idempotency_records SET locked_until = now() - interval '1 second'"))
    again = await tenant.post("/posts", json=body, headers={"Idempotency-Key": "lost-1"})
    assert again.status_code == 409 and "took effect" in again.json()["message"]
    rows = await fetch(engine, "SELECT count(*) AS n FROM posts WHERE workspace_id = :ws", ws=tenant.workspace_id)
    assert rows[0].n == 1
    # A first request that failed (rolled back) and died the same way is still taken over and run.
    with monkeypatch.context() as patched:
        patched.setattr(IdempotencyMiddleware, "_finish", died_before_storing)
        bad = await tenant.post("/posts", json={"platforms": []}, headers={"Idempotency-Key": "lost-2"})
    assert bad.status_code == 400
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE idempotency_records SET locked_until = now() - interval '1 second'"))
    retried = await tenant.post("/posts", json={"platforms": []}, headers={"Idempotency-Key": "lost-2"})
    assert retried.status_code == 400  # run again (nothing had taken effect), not refused as done


async def test_idempotency_on_other_posts(tenant, engine):
    post = await tenant.create_post(scheduledFor=future(hours=2))
    first = await tenant.post(f"/posts/{post['id']}/cancel", json={"reason": "r"}, headers={"Idempotency-Key": "c1"})
    again = await tenant.post(f"/posts/{post['id']}/cancel", json={"reason": "r"}, headers={"Idempotency-Key": "c1"})
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    without = await tenant.post(f"/posts/{post['id']}/cancel", json={"reason": "r"})
    assert without.status_code == 409


async def test_platform_rules_count_length_the_platform_way(tenant):
    # X counts any URL as 23 characters: 250 + 1 + 23 = 274 fits although the text is 371 long.
    fits = "a" * 250 + " https://example.com/" + "p" * 100
    post = await tenant.create_post(
        content=fits, scheduledFor=future(hours=1), platforms=[{"accountId": tenant.accounts[0]["id"]}]
    )
    assert post["status"] == "SCHEDULED"
    too_long = "a" * 260 + " https://example.com/"
    response = await tenant.post(
        "/posts",
        json={
            "content": too_long,
            "scheduledFor": future(hours=1),
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
        },
    )
    assert response.status_code == 400
    assert "weighted" in response.json()["details"][0]["message"]


def test_test_only_switch_is_refused_in_production():
    from pydantic import ValidationError

    from postwright.config import Settings

    with pytest.raises(ValidationError, match="test-only"):
        Settings(env="production", media_allow_loopback_http=True)
    assert Settings(env="production").media_allow_loopback_http is False


async def test_idempotency_scope_is_the_key_not_the_header(tenant):
    body = {"content": "either header", "platforms": [{"accountId": tenant.accounts[0]["id"]}]}
    first = await tenant.client.post(
        "/posts", json=body, headers={"Authorization": f"Bearer {tenant.key}", "Idempotency-Key": "hdr-1"}
    )
    again = await tenant.client.post("/posts", json=body, headers={"x-api-key": tenant.key, "Idempotency-Key": "hdr-1"})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
