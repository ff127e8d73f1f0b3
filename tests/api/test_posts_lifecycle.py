"""Everything after create: list, get, patch, cancel, publish now, reschedule, approval, retries, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from .helpers import fetch, future, job_for, jobs_for_post, parse


async def set_target(engine, target_id: str, **values) -> None:
    assignments = ", ".join(f"{k} = :{k}" for k in values)
    async with engine.begin() as conn:
        await conn.execute(text(f"UPDATE post_targets SET {assignments} WHERE id = :id"), {"id": target_id, **values})


async def set_post_status(engine, post_id: str, status: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE posts SET status = :s WHERE id = :id"), {"id": post_id, "s": status})


async def make_failed(tenant, engine, **target_values):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    for t in post["targets"]:
        await set_target(
            engine,
            t["id"],
            status="FAILED",
            error_code="PLATFORM_ERROR",
            error_message="boom",
            attempt_count=1,
            **target_values,
        )
    await set_post_status(engine, post["id"], "FAILED")
    return post


# ---- list ----------------------------------------------------------------------------------------


async def test_list_newest_first_with_keyset_paging(tenant):
    ids = [(await tenant.create_post(content=f"post {i}"))["id"] for i in range(5)]
    first = (await tenant.get("/posts?limit=2")).json()
    assert [p["id"] for p in first["data"]] == ids[::-1][:2]
    assert first["pagination"]["limit"] == 2
    assert first["pagination"]["hasNextPage"] is True
    second = (await tenant.get(f"/posts?limit=2&cursor={first['pagination']['nextCursor']}")).json()
    assert [p["id"] for p in second["data"]] == ids[::-1][2:4]
    third = (await tenant.get(f"/posts?limit=2&cursor={second['pagination']['nextCursor']}")).json()
    assert [p["id"] for p in third["data"]] == ids[:1]
    assert third["pagination"] == {"limit": 2, "hasNextPage": False, "nextCursor": None}
    by_page = (await tenant.get("/posts?limit=2&page=2")).json()
    assert [p["id"] for p in by_page["data"]] == ids[::-1][2:4]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=-1", "limit=abc", "page=0", "cursor=%%%"])
async def test_list_bad_paging_is_400(tenant, query):
    response = await tenant.get(f"/posts?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_FAILED"


async def test_list_default_limit_is_20(tenant):
    assert (await tenant.get("/posts")).json()["pagination"]["limit"] == 20


async def test_list_filters(make_tenant):
    tenant = await make_tenant(accounts=0)
    x = await tenant.add_account("X", "xacct")
    bsky = await tenant.add_account("LINKEDIN_PERSON", "liacct")
    draft = await tenant.create_post(content="alpha 100% draft", platforms=[{"accountId": x["id"]}])
    scheduled = await tenant.create_post(
        content="beta", scheduledFor="2031-05-01T00:00:00Z", platforms=[{"accountId": bsky["id"]}]
    )

    async def ids(query: str) -> list[str]:
        response = await tenant.get(f"/posts?{query}")
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["data"]]

    assert await ids("status=DRAFT") == [draft["id"]]
    assert await ids("status=SCHEDULED") == [scheduled["id"]]
    assert await ids("platform=X") == [draft["id"]]
    assert await ids(f"socialAccountId={bsky['id']}") == [scheduled["id"]]
    assert await ids("from=2031-04-30T00:00:00Z&to=2031-05-02T00:00:00Z") == [scheduled["id"]]
    assert await ids("to=2030-01-01T00:00:00Z") == []
    assert await ids("q=ALPHA") == [draft["id"]]
    assert await ids("q=100%25") == [draft["id"]]
    assert await ids("q=%25") == [draft["id"]]
    assert await ids("q=_") == []


async def test_deleted_posts_are_hidden(tenant):
    post = await tenant.create_post()
    assert (await tenant.delete(f"/posts/{post['id']}")).status_code == 200
    assert (await tenant.get(f"/posts/{post['id']}")).status_code == 404
    assert (await tenant.get("/posts")).json()["data"] == []
    assert (await tenant.delete(f"/posts/{post['id']}")).status_code == 404


# ---- status and attempts -------------------------------------------------------------------------


async def test_status_view(tenant):
    post = await tenant.create_post(scheduledFor="2031-01-01T00:00:00Z")
    status = (await tenant.get(f"/posts/{post['id']}/status")).json()
    assert status["status"] == "SCHEDULED"
    assert [t["id"] for t in status["targets"]] == [t["id"] for t in post["targets"]]
    assert status["targets"][0]["nextAttemptAt"] == "2031-01-01T00:00:00Z"
    assert status["targets"][0]["attemptCount"] == 0
    assert status["targets"][0]["externalUrl"] is None


async def test_attempts_survive_an_edit(tenant, engine):
    post = await make_failed(tenant, engine)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO publish_attempts (id, post_id, target_id, social_account_id, platform, attempt_number, kind, "
                "status, started_at, error_code) VALUES ('att_1', :p, :t, :a, 'X', 1, 'PUBLISH', 'FAILED', now(), 'PLATFORM_ERROR')"
            ),
            {"p": post["id"], "t": post["targets"][0]["id"], "a": post["targets"][0]["socialAccountId"]},
        )
    edited = await tenant.patch(
        f"/posts/{post['id']}", json={"content": "fixed", "platforms": [{"accountId": tenant.accounts[1]["id"]}]}
    )
    assert edited.status_code == 200
    attempts = (await tenant.get(f"/posts/{post['id']}/attempts")).json()["data"]
    assert [a["id"] for a in attempts] == ["att_1"]
    assert attempts[0]["targetId"] == post["targets"][0]["id"]
    assert attempts[0]["errorCode"] == "PLATFORM_ERROR"


# ---- patch ---------------------------------------------------------------------------------------


async def test_patch_replaces_targets_and_media_wholesale(tenant, engine):
    post = await tenant.create_post(platforms=[{"accountId": tenant.accounts[0]["id"], "firstComment": "c"}])
    response = await tenant.patch(
        f"/posts/{post['id']}",
        json={
            "targets": [{"socialAccountId": tenant.accounts[1]["id"], "captionOverride": "new"}],
            "caption": "v2",
        },
    )
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["caption"] == "v2"
    assert edited["createdViaFlatShape"] is False
    assert [t["socialAccountId"] for t in edited["targets"]] == [tenant.accounts[1]["id"]]
    assert edited["targets"][0]["id"] != post["targets"][0]["id"]
    assert edited["targets"][0]["firstComment"] is None
    rows = await fetch(engine, "SELECT id FROM post_targets WHERE post_id = :p", p=post["id"])
    assert [r.id for r in rows] == [edited["targets"][0]["id"]]


async def test_patch_of_scheduled_post_supersedes_old_job(tenant, engine):
    post = await tenant.create_post(scheduledFor="2031-01-01T00:00:00Z")
    edited = (
        await tenant.patch(
            f"/posts/{post['id']}",
            json={
                "content": "edited",
                "scheduledFor": "2031-02-01T00:00:00Z",
                "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            },
        )
    ).json()
    assert edited["status"] == "SCHEDULED"
    assert edited["workflowId"] != post["workflowId"]
    new_job = await job_for(engine, edited["workflowId"])
    assert new_job["payload"]["generation"] == 2
    assert edited["targets"][0]["scheduledFor"] == "2031-02-01T00:00:00Z"


async def test_patch_without_time_turns_scheduled_into_draft(tenant):
    post = await tenant.create_post(scheduledFor="2031-01-01T00:00:00Z")
    edited = (
        await tenant.patch(f"/posts/{post['id']}", json={"platforms": [{"accountId": tenant.accounts[0]["id"]}]})
    ).json()
    assert edited["status"] == "DRAFT"
    assert edited["workflowId"] is None


@pytest.mark.parametrize("status", ["PUBLISHING", "PUBLISHED", "PARTIALLY_PUBLISHED"])
async def test_patch_refused_while_publishing_or_published(tenant, engine, status):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    await set_post_status(engine, post["id"], status)
    response = await tenant.patch(f"/posts/{post['id']}", json={"platforms": [{"accountId": tenant.accounts[0]["id"]}]})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_STATE"
    rows = await fetch(engine, "SELECT id FROM post_targets WHERE post_id = :p ORDER BY position", p=post["id"])
    assert [r.id for r in rows] == [t["id"] for t in post["targets"]]


async def test_patch_of_canceled_post_revives_it(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    await tenant.post(f"/posts/{post['id']}/cancel")
    response = await tenant.patch(
        f"/posts/{post['id']}",
        json={
            "content": "again",
            "scheduledFor": future(hours=2),
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
        },
    )
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["status"] == "SCHEDULED"
    assert edited["canceledAt"] is None


async def test_viewer_cannot_patch(tenant):
    viewer = await tenant.make_key(role="VIEWER")
    post = await tenant.create_post()
    response = await tenant.patch(
        f"/posts/{post['id']}", key=viewer, json={"platforms": [{"accountId": tenant.accounts[0]["id"]}]}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN_ROLE"


# ---- cancel --------------------------------------------------------------------------------------


async def test_cancel_scheduled_post_with_reason(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    response = await tenant.post(f"/posts/{post['id']}/cancel", json={"reason": "Legal review pending."})
    assert response.status_code == 200
    canceled = response.json()
    assert canceled["status"] == "CANCELED"
    assert canceled["workflowId"] is None
    assert canceled["canceledAt"] is not None
    assert canceled["cancelReason"] == "Legal review pending."
    assert all(t["status"] == "CANCELED" for t in canceled["targets"])
    assert (await tenant.get(f"/posts/{post['id']}")).json()["status"] == "CANCELED"
    audit = (await tenant.get("/audit-log?action=post.cancel")).json()["data"]
    assert audit[0]["subjectId"] == post["id"]
    assert audit[0]["data"] == {"reason": "Legal review pending."}
    assert audit[0]["actorUserId"] == tenant.user_id


async def test_cancel_without_body(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    assert (await tenant.post(f"/posts/{post['id']}/cancel")).status_code == 200


async def test_cancel_reason_too_long_is_400(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    response = await tenant.post(f"/posts/{post['id']}/cancel", json={"reason": "r" * 1025})
    assert response.status_code == 400
    assert (await tenant.get(f"/posts/{post['id']}")).json()["status"] == "SCHEDULED"


@pytest.mark.parametrize("status", ["DRAFT", "PUBLISHED", "PARTIALLY_PUBLISHED", "FAILED", "CANCELED"])
async def test_cancel_in_terminal_states_is_409(tenant, engine, status):
    post = await tenant.create_post(scheduledFor=future(hours=1)) if status != "DRAFT" else await tenant.create_post()
    if status != "DRAFT":
        await set_post_status(engine, post["id"], status)
    response = await tenant.post(f"/posts/{post['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["code"] == "CONFLICT"


async def test_cancel_while_publishing_before_anything_left(tenant, engine):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    await set_target(engine, post["targets"][0]["id"], status="PUBLISHING")
    await set_post_status(engine, post["id"], "PUBLISHING")
    response = await tenant.post(f"/posts/{post['id']}/cancel")
    assert response.status_code == 200
    assert {t["status"] for t in response.json()["targets"]} == {"CANCELED"}


async def test_cancel_while_publishing_after_a_request_left_is_409(tenant, engine):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    await set_target(engine, post["targets"][0]["id"], status="PUBLISHING", sent_at=datetime.now(UTC))
    await set_post_status(engine, post["id"], "PUBLISHING")
    response = await tenant.post(f"/posts/{post['id']}/cancel")
    assert response.status_code == 409
    rows = await fetch(engine, "SELECT status FROM post_targets WHERE post_id = :p ORDER BY position", p=post["id"])
    assert [r.status for r in rows] == ["PUBLISHING", "SCHEDULED"]


# ---- publish now ---------------------------------------------------------------------------------


async def test_publish_now_from_draft_uses_lead_time(tenant, engine):
    post = await tenant.create_post()
    before = datetime.now(UTC)
    response = await tenant.post(f"/posts/{post['id']}/publish", json={"leadSeconds": 120})
    assert response.status_code == 200
    published = response.json()
    assert published["status"] == "SCHEDULED"
    due = parse(published["scheduledAt"])
    assert before + timedelta(seconds=119) <= due <= datetime.now(UTC) + timedelta(seconds=121)
    job = await job_for(engine, published["workflowId"])
    assert job["payload"]["postId"] == post["id"]


async def test_publish_now_default_lead_is_30s(tenant):
    post = await tenant.create_post()
    before = datetime.now(UTC)
    published = (await tenant.post(f"/posts/{post['id']}/publish")).json()
    delta = parse(published["scheduledAt"]) - before
    assert timedelta(seconds=29) <= delta <= timedelta(seconds=32)


@pytest.mark.parametrize("lead", [-1, 301, "soon"])
async def test_publish_now_bad_lead_is_400(tenant, lead):
    post = await tenant.create_post()
    response = await tenant.post(f"/posts/{post['id']}/publish", json={"leadSeconds": lead})
    assert response.status_code == 400


async def test_publish_now_from_scheduled_moves_it_forward(tenant, engine):
    post = await tenant.create_post(scheduledFor="2031-01-01T00:00:00Z")
    published = (await tenant.post(f"/posts/{post['id']}/publish", json={"leadSeconds": 0})).json()
    assert parse(published["scheduledAt"]) < datetime.now(UTC) + timedelta(seconds=5)
    jobs = await jobs_for_post(engine, post["id"])
    assert [j["payload"]["generation"] for j in jobs] == [1, 2]


async def test_publish_now_from_failed_retries_failed_targets_only(tenant, engine):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    t0, t1 = post["targets"]
    await set_target(engine, t0["id"], status="FAILED", error_code="PLATFORM_ERROR")
    await set_target(engine, t1["id"], status="SKIPPED")
    await set_post_status(engine, post["id"], "FAILED")
    published = (await tenant.post(f"/posts/{post['id']}/publish")).json()
    statuses = {t["id"]: t for t in published["targets"]}
    assert statuses[t0["id"]]["status"] == "SCHEDULED" and statuses[t0["id"]]["errorCode"] is None
    assert statuses[t1["id"]]["status"] == "SKIPPED"


@pytest.mark.parametrize("status", ["PUBLISHED", "PARTIALLY_PUBLISHED", "CANCELED", "PUBLISHING"])
async def test_publish_now_refused_in_other_states(tenant, engine, status):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    await set_post_status(engine, post["id"], status)
    assert (await tenant.post(f"/posts/{post['id']}/publish")).status_code == 409


# ---- reschedule ----------------------------------------------------------------------------------


async def test_reschedule_moves_time_and_requeues(tenant, engine):
    post = await tenant.create_post(scheduledFor="2031-01-01T00:00:00Z", content="keep me")
    response = await tenant.post(f"/posts/{post['id']}/reschedule", json={"scheduledFor": "2031-02-02T10:00:00Z"})
    assert response.status_code == 200
    moved = response.json()
    assert moved["scheduledAt"] == "2031-02-02T10:00:00Z"
    assert moved["caption"] == "keep me"
    assert [t["id"] for t in moved["targets"]] == [t["id"] for t in post["targets"]]
    job = await job_for(engine, moved["workflowId"])
    assert job["payload"]["generation"] == 2
    audit = (await tenant.get("/audit-log?action=post.reschedule")).json()["data"]
    assert audit[0]["data"]["to"].startswith("2031-02-02T10:00:00")


async def test_reschedule_refuses_past_and_drafts(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    assert (
        await tenant.post(f"/posts/{post['id']}/reschedule", json={"scheduledFor": "2020-01-01T00:00:00Z"})
    ).status_code == 400
    draft = await tenant.create_post()
    assert (
        await tenant.post(f"/posts/{draft['id']}/reschedule", json={"scheduledFor": future(hours=1)})
    ).status_code == 409
    assert (await tenant.post(f"/posts/{post['id']}/reschedule", json={})).status_code == 400


# ---- approval ------------------------------------------------------------------------------------


async def require_approval(tenant, value: bool = True) -> None:
    response = await tenant.patch("/workspace", json={"requireApproval": value})
    assert response.status_code == 200
    assert response.json()["requireApproval"] is value


async def test_editor_posts_need_approval_and_admin_approves(tenant, engine):
    await require_approval(tenant)
    editor = await tenant.make_key(role="EDITOR", email="editor@example.com")
    response = await tenant.post(
        "/posts",
        key=editor,
        json={
            "content": "needs a look",
            "scheduledFor": "2031-01-01T00:00:00Z",
            "platforms": [{"accountId": tenant.accounts[0]["id"]}],
        },
    )
    assert response.status_code == 201
    post = response.json()
    assert post["status"] == "NEEDS_APPROVAL"
    assert post["workflowId"] is None
    assert await jobs_for_post(engine, post["id"]) == []

    refused = await tenant.post(f"/posts/{post['id']}/approve", key=editor)
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN_ROLE"

    approved = (await tenant.post(f"/posts/{post['id']}/approve")).json()
    assert approved["status"] == "SCHEDULED"
    assert approved["approvedByUserId"] == tenant.user_id
    assert approved["approvedAt"] is not None
    assert approved["workflowId"].startswith("wf_")
    assert approved["targets"][0]["scheduledFor"] == "2031-01-01T00:00:00Z"
    assert (await tenant.post(f"/posts/{post['id']}/approve")).status_code == 409


async def test_owner_posts_skip_approval(tenant):
    await require_approval(tenant)
    post = await tenant.create_post(scheduledFor=future(hours=1))
    assert post["status"] == "SCHEDULED"


async def test_reject_sends_post_back_to_draft(tenant):
    await require_approval(tenant)
    editor = await tenant.make_key(role="EDITOR", email="editor2@example.com")
    response = await tenant.post(
        "/posts",
        key=editor,
        json={"content": "c", "scheduledFor": future(hours=1), "platforms": [{"accountId": tenant.accounts[0]["id"]}]},
    )
    assert response.status_code == 201, response.text
    post = response.json()
    rejected = await tenant.post(f"/posts/{post['id']}/reject", json={"reason": "off-brand"})
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "DRAFT"
    assert (await tenant.get("/audit-log?action=post.reject")).json()["data"][0]["data"] == {"reason": "off-brand"}


async def test_approval_setting_needs_admin(tenant):
    editor = await tenant.make_key(role="EDITOR", email="editor3@example.com")
    response = await tenant.patch("/workspace", key=editor, json={"requireApproval": True})
    assert response.status_code == 403
    assert (await tenant.get("/workspace")).json()["requireApproval"] is False


async def test_cancel_needs_approval_post(tenant):
    await require_approval(tenant)
    editor = await tenant.make_key(role="EDITOR", email="editor4@example.com")
    post = (
        await tenant.post(
            "/posts",
            key=editor,
            json={
                "content": "c",
                "scheduledFor": future(hours=1),
                "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            },
        )
    ).json()
    canceled = (await tenant.post(f"/posts/{post['id']}/cancel", key=editor)).json()
    assert canceled["status"] == "CANCELED"


# ---- retries -------------------------------------------------------------------------------------


async def test_retry_failed_target(tenant, engine):
    post = await make_failed(tenant, engine)
    target = post["targets"][0]
    response = await tenant.post(f"/posts/{post['id']}/targets/{target['id']}/retry")
    assert response.status_code == 200
    retried = {t["id"]: t for t in response.json()["targets"]}
    assert retried[target["id"]]["status"] == "SCHEDULED"
    assert retried[target["id"]]["errorCode"] is None
    assert retried[post["targets"][1]["id"]]["status"] == "FAILED"
    assert response.json()["status"] == "PUBLISHING"  # one due, one done
    job = await job_for(engine, response.json()["workflowId"])
    assert job["payload"]["postId"] == post["id"]


async def test_retry_of_non_failed_target_is_409(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    response = await tenant.post(f"/posts/{post['id']}/targets/{post['targets'][0]['id']}/retry")
    assert response.status_code == 409


async def test_retry_of_unknown_target_is_404(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    assert (await tenant.post(f"/posts/{post['id']}/targets/tgt_nope/retry")).status_code == 404


async def test_first_comment_retry_with_cooldown(tenant, engine):
    post = await tenant.create_post(
        scheduledFor=future(hours=1), platforms=[{"accountId": tenant.accounts[0]["id"], "firstComment": "hello"}]
    )
    target = post["targets"][0]
    await set_target(
        engine,
        target["id"],
        status="PUBLISHED",
        first_comment_error="comments disabled",
        first_comment_state="FAILED",
        first_comment_attempt=1,
        first_comment_last_attempt_at=datetime.now(UTC) - timedelta(seconds=10),
        published_at=datetime.now(UTC),
        external_post_id="123",
    )
    await set_post_status(engine, post["id"], "PUBLISHED")
    url = f"/posts/{post['id']}/targets/{target['id']}/first-comment/retry"
    early = await tenant.post(url)
    assert early.status_code == 429
    assert early.json()["code"] == "RATE_LIMITED"
    assert 45 <= int(early.headers["retry-after"]) <= 51

    await set_target(engine, target["id"], first_comment_last_attempt_at=datetime.now(UTC) - timedelta(seconds=61))
    ok = await tenant.post(url)
    assert ok.status_code == 200
    assert ok.json()["targets"][0]["firstCommentError"] is None
    rows = await fetch(engine, "SELECT payload FROM pgqueuer WHERE entrypoint = 'publishing.first_comment'")
    assert any(target["id"] in bytes(r.payload).decode() for r in rows)


async def test_first_comment_retry_without_failure_is_409(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    response = await tenant.post(f"/posts/{post['id']}/targets/{post['targets'][0]['id']}/first-comment/retry")
    assert response.status_code == 409


# ---- delete --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["DRAFT", "SCHEDULED", "FAILED", "CANCELED"])
async def test_delete_allowed_states(tenant, engine, status):
    post = await tenant.create_post() if status == "DRAFT" else await tenant.create_post(scheduledFor=future(hours=1))
    if status == "FAILED":
        post = await make_failed(tenant, engine)
    if status == "CANCELED":
        await tenant.post(f"/posts/{post['id']}/cancel")
    response = await tenant.delete(f"/posts/{post['id']}")
    assert response.status_code == 200
    assert response.json() == {"success": True}
    rows = await fetch(engine, "SELECT deleted_at, workflow_id FROM posts WHERE id = :p", p=post["id"])
    assert rows[0].deleted_at is not None and rows[0].workflow_id is None


async def test_delete_of_scheduled_post_cancels_targets(tenant, engine):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    await tenant.delete(f"/posts/{post['id']}")
    rows = await fetch(engine, "SELECT status FROM post_targets WHERE post_id = :p", p=post["id"])
    assert {r.status for r in rows} == {"CANCELED"}
    audit = (await tenant.get("/audit-log?action=post.delete")).json()["data"]
    assert audit[0]["subjectId"] == post["id"]


@pytest.mark.parametrize("status", ["PUBLISHING", "PUBLISHED", "PARTIALLY_PUBLISHED"])
async def test_delete_refused_states(tenant, engine, status):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    await set_post_status(engine, post["id"], status)
    response = await tenant.delete(f"/posts/{post['id']}")
    assert response.status_code == 409
    assert (await fetch(engine, "SELECT deleted_at FROM posts WHERE id = :p", p=post["id"]))[0].deleted_at is None


async def ready_media(engine, tenant, *media_ids: str) -> None:
    """READY media rows in the tenant's library (their storage key is their id)."""
    async with engine.begin() as conn:
        for media_id in media_ids:
            await conn.execute(
                text(
                    "INSERT INTO media_assets (id, workspace_id, kind, mime_type, status, storage_key, size_bytes, "
                    "width, height, created_at, updated_at) "
                    "VALUES (:id, :ws, 'IMAGE', 'image/png', 'READY', :id, 100, 16, 9, now(), now())"
                ),
                {"id": media_id, "ws": tenant.workspace_id},
            )


async def test_delete_media_removes_only_unshared_media(tenant, engine):
    await ready_media(engine, tenant, "med_SHARED", "med_ALONE")
    doomed = await tenant.create_post(mediaIds=["med_SHARED", "med_ALONE"])
    await tenant.create_post(mediaIds=["med_SHARED"])
    assert (await tenant.delete(f"/posts/{doomed['id']}?deleteMedia=true")).status_code == 200
    rows = {
        r.id: r.deleted_at
        for r in await fetch(
            engine, "SELECT id, deleted_at FROM media_assets WHERE workspace_id = :ws", ws=tenant.workspace_id
        )
    }
    assert rows["med_SHARED"] is None
    assert rows["med_ALONE"] is not None


async def test_delete_media_counts_thread_parts_on_both_sides(tenant, engine):
    await ready_media(engine, tenant, "med_THREADSHARED", "med_THREADALONE")

    def with_thread(*media: str) -> list[dict]:
        return [
            {
                "accountId": tenant.accounts[0]["id"],
                "platformOptions": {"thread": [{"text": "2", "mediaIds": list(media)}]},
            }
        ]

    doomed = await tenant.create_post(platforms=with_thread("med_THREADSHARED", "med_THREADALONE"))
    await tenant.create_post(platforms=with_thread("med_THREADSHARED"))
    assert (await tenant.delete(f"/posts/{doomed['id']}?deleteMedia=true")).status_code == 200
    rows = {
        r.id: r.deleted_at
        for r in await fetch(
            engine, "SELECT id, deleted_at FROM media_assets WHERE workspace_id = :ws", ws=tenant.workspace_id
        )
    }
    assert rows["med_THREADSHARED"] is None  # another post's thread still uses it
    assert rows["med_THREADALONE"] is not None  # only the deleted post's thread used it


async def test_delete_without_delete_media_keeps_media(tenant, engine):
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO media_assets (id, workspace_id, kind, mime_type, status, storage_key, created_at, updated_at) "
                "VALUES ('med_KEEP', :ws, 'IMAGE', 'image/png', 'READY', 'k', now(), now())"
            ),
            {"ws": tenant.workspace_id},
        )
    post = await tenant.create_post(mediaIds=["med_KEEP"])
    await tenant.delete(f"/posts/{post['id']}")
    rows = await fetch(engine, "SELECT deleted_at FROM media_assets WHERE id = 'med_KEEP'")
    assert rows[0].deleted_at is None


# ---- audit log -----------------------------------------------------------------------------------


async def test_audit_log_records_lifecycle_and_pages(tenant):
    post = await tenant.create_post(scheduledFor=future(hours=1))
    edited = await tenant.patch(
        f"/posts/{post['id']}",
        json={"content": "v2", "scheduledFor": future(hours=2), "platforms": [{"accountId": tenant.accounts[0]["id"]}]},
    )
    assert edited.status_code == 200, edited.text
    await tenant.post(f"/posts/{post['id']}/cancel", json={"reason": "hold"})
    await tenant.delete(f"/posts/{post['id']}")
    events = (await tenant.get(f"/audit-log?subjectId={post['id']}")).json()["data"]
    assert [e["action"] for e in events] == ["post.delete", "post.cancel", "post.update", "post.create"]
    assert all(e["id"].startswith("aud_") for e in events)
    first = (await tenant.get("/audit-log?limit=1")).json()
    assert first["pagination"]["hasNextPage"] is True
    nxt = (await tenant.get(f"/audit-log?limit=1&cursor={first['pagination']['nextCursor']}")).json()
    assert nxt["data"][0]["id"] < first["data"][0]["id"]
    all_actions = {e["action"] for e in (await tenant.get("/audit-log?limit=100")).json()["data"]}
    assert {"workspace.create", "key.create", "account.connect"} <= all_actions


async def test_audit_log_needs_admin(tenant):
    editor = await tenant.make_key(role="EDITOR", email="ed-audit@example.com")
    assert (await tenant.get("/audit-log", key=editor)).status_code == 403


async def test_the_plain_row_read_renders_exactly_like_the_orm(tenant, engine, app):
    """GET reads plain rows (no ORM) for speed: the body must not differ from the ORM's rendering."""
    from postwright.db.session import create_sessionmaker
    from postwright.posts.schemas import post_to_dict, status_to_dict
    from postwright.posts.service import posts_service
    from postwright.workspaces.service import workspaces_service

    await ready_media(engine, tenant, "med_VIEW1", "med_VIEW2")
    post = await tenant.create_post(
        content="rendered twice",
        scheduledFor=future(hours=2),
        timezone="Europe/Stockholm",
        mediaIds=["med_VIEW1", "med_VIEW2"],
        mediaAltText={"med_VIEW2": "second"},
        platforms=[
            {
                "accountId": tenant.accounts[0]["id"],
                "firstComment": "c",
                "platformOptions": {"platform": "X", "thread": [{"text": "2", "mediaIds": ["med_VIEW1"]}]},
            },
            {"accountId": tenant.accounts[1]["id"], "captionOverride": "other", "mediaIds": ["med_VIEW2"]},
        ],
    )
    async with create_sessionmaker(engine)() as session:
        principal = await workspaces_service.authenticate(session, raw_key=tenant.key, workspace_hint=None)
        orm = await posts_service.get(session, principal, post["id"])
        view = await posts_service.read(session, principal, post["id"])
        assert post_to_dict(view) == post_to_dict(orm)
        assert status_to_dict(view) == status_to_dict(orm)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert [t["id"] for t in got["targets"]] == [t["id"] for t in post["targets"]]
    assert [m["mediaAssetId"] for m in got["media"]] == ["med_VIEW1", "med_VIEW2"]
