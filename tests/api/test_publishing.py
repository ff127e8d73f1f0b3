"""The publishing engine end to end: API → claim → adapter → fake platform → recorded outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import text

from postwright.testing.fakes import RunningFake

from .conftest import build_publisher, slow_platform_settings
from .helpers import fetch, future, job_for


def token_of(tenant, index: int = 0) -> str:
    return f"fake-{tenant.workspace_id}-acct{index}"


def tweets(fake_x: RunningFake, tenant, index: int = 0) -> list:
    return [
        r
        for r in fake_x.fake.requests(path="/2/tweets")
        if r.method == "POST"
        and r.account
        and any(token_of(tenant, index) == k for k in fake_x.fake.account_keys_of(r.account))
    ]


def created(fake_x: RunningFake, text_contains: str) -> list:
    return [p for p in fake_x.fake.posts() if text_contains in p.text]


async def due_post(tenant, content: str, **extra) -> dict:
    return await tenant.create_post(content=content, scheduledFor=future(seconds=-1), **extra)


async def target_rows(engine, post_id: str) -> list:
    return await fetch(engine, "SELECT * FROM post_targets WHERE post_id = :p ORDER BY position", p=post_id)


async def test_due_post_is_published_once_on_every_target(tenant, publisher, fake_x, engine):
    content = f"launch {tenant.workspace_id}"
    post = await due_post(tenant, content)
    assert await publisher.dispatch(post["id"], 1) == 2
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["status"] == "PUBLISHED"
    assert got["publishedAt"] is not None
    for target in got["targets"]:
        assert target["status"] == "PUBLISHED"
        assert target["externalPostId"]
        assert target["externalUrl"].endswith(target["externalPostId"])
        assert target["attemptCount"] == 1
    assert len(created(fake_x, content)) == 2
    attempts = (await tenant.get(f"/posts/{post['id']}/attempts")).json()["data"]
    assert [a["status"] for a in attempts] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(a["sentAt"] for a in attempts)
    # The same job again (pgqueuer re-delivery) finds nothing to do.
    assert await publisher.dispatch(post["id"], 1) == 0
    assert len(created(fake_x, content)) == 2
    metrics = (await tenant.client.get("/metrics")).text
    assert 'postwright_target_outcomes_total{outcome="published",platform="X"}' in metrics
    assert "postwright_publish_lag_seconds_count" in metrics


@pytest.mark.parametrize("change", ["edit", "cancel", "reschedule", "delete"])
async def test_superseded_job_sends_nothing(tenant, publisher, fake_x, engine, change):
    content = f"old {change} {tenant.workspace_id}"
    post = await due_post(tenant, content)
    if change == "edit":
        response = await tenant.patch(
            f"/posts/{post['id']}",
            json={
                "content": content + " v2",
                "scheduledFor": future(hours=1),
                "platforms": [{"accountId": tenant.accounts[0]["id"]}],
            },
        )
    elif change == "cancel":
        response = await tenant.post(f"/posts/{post['id']}/cancel")
    elif change == "reschedule":
        response = await tenant.post(f"/posts/{post['id']}/reschedule", json={"scheduledFor": future(hours=1)})
    else:
        response = await tenant.delete(f"/posts/{post['id']}")
    assert response.status_code == 200
    before = await target_rows(engine, post["id"])
    assert await publisher.dispatch(post["id"], 1) == 0
    assert await target_rows(engine, post["id"]) == before
    assert created(fake_x, content) == []
    assert await publisher.sweep() >= 0
    assert created(fake_x, content) == []


async def test_rate_limit_backs_off_and_pauses_the_account(tenant, publisher, fake_x, engine):
    content = f"busy {tenant.workspace_id}"
    fake_x.fake.push_failure("rate_limited", account=token_of(tenant), retry_after=30, with_retry_after=True)
    post = await due_post(tenant, content)
    await publisher.dispatch(post["id"], 1)
    rows = {r.social_account_id: r for r in await target_rows(engine, post["id"])}
    limited = rows[tenant.accounts[0]["id"]]
    assert limited.status == "SCHEDULED"
    assert limited.next_attempt_at >= datetime.now(UTC) + timedelta(seconds=25)
    assert limited.sent_at is None
    assert rows[tenant.accounts[1]["id"]].status == "PUBLISHED"
    paused = await fetch(engine, "SELECT paused_until FROM social_accounts WHERE id = :id", id=tenant.accounts[0]["id"])
    assert paused[0].paused_until >= datetime.now(UTC) + timedelta(seconds=25)
    status = (await tenant.get(f"/posts/{post['id']}/status")).json()
    assert status["status"] == "PUBLISHING"
    assert status["targets"][0]["nextAttemptAt"] is not None
    # The retry's job is recorded on the post (so edit/cancel can supersede it) and fires at the retry time.
    retry_job = await job_for(engine, (await tenant.get(f"/posts/{post['id']}")).json()["workflowId"])
    assert retry_job["payload"] == {"postId": post["id"], "generation": 1}
    assert abs((retry_job["execute_after"] - limited.next_attempt_at).total_seconds()) < 2

    # Another due post of the same account waits for the pause.
    other = await due_post(tenant, content + " second", platforms=[{"accountId": tenant.accounts[0]["id"]}])
    assert await publisher.dispatch(other["id"], 1) == 0
    assert created(fake_x, content + " second") == []


async def test_rate_limit_exhausts_attempts_then_fails(tenant, publisher, fake_x, engine):
    content = f"always busy {tenant.workspace_id}"
    fake_x.fake.push_failure("rate_limited", account=token_of(tenant), retry_after=0, times=5)
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    for _ in range(3):
        async with publisher.sessionmaker() as session, session.begin():
            await session.execute(
                text("UPDATE post_targets SET next_attempt_at = now() WHERE post_id = :p"), {"p": post["id"]}
            )
            await session.execute(
                text("UPDATE social_accounts SET paused_until = NULL WHERE id = :a"), {"a": tenant.accounts[0]["id"]}
            )
        await publisher.dispatch(post["id"], 1)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["status"] == "FAILED"
    assert got["targets"][0]["errorCode"] == "RATE_LIMITED"
    assert got["targets"][0]["attemptCount"] == 3
    assert created(fake_x, content) == []


async def test_duplicate_content_fails_permanently(tenant, publisher, fake_x):
    content = f"dupe {tenant.workspace_id}"
    fake_x.fake.push_failure("duplicate", account=token_of(tenant))
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    await publisher.dispatch(post["id"], 1)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["status"] == "FAILED"
    assert got["targets"][0]["errorCode"] == "DUPLICATE_CONTENT"
    assert got["targets"][0]["errorMessage"]


async def test_partial_failure_is_partially_published(tenant, publisher, fake_x):
    content = f"half {tenant.workspace_id}"
    fake_x.fake.push_failure("content_rejected", account=token_of(tenant, 1))
    post = await due_post(tenant, content)
    await publisher.dispatch(post["id"], 1)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["status"] == "PARTIALLY_PUBLISHED"
    assert [t["status"] for t in got["targets"]] == ["PUBLISHED", "FAILED"]
    assert got["targets"][1]["errorCode"] == "CONTENT_REJECTED"
    # The user retries the failed target; it publishes and the post becomes PUBLISHED.
    assert (await tenant.post(f"/posts/{post['id']}/targets/{got['targets'][1]['id']}/retry")).status_code == 200
    await publisher.dispatch(post["id"], 1)
    assert (await tenant.get(f"/posts/{post['id']}")).json()["status"] == "PUBLISHED"
    assert len(created(fake_x, content)) == 2


async def test_answer_lost_is_looked_up_not_resent(tenant, publisher, fake_x):
    content = f"lost answer {tenant.workspace_id}"
    fake_x.fake.push_failure("answer_lost", account=token_of(tenant), hang_seconds=5)
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    await publisher.dispatch(post["id"], 1)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["targets"][0]["status"] == "PUBLISHED", got["targets"][0]
    assert len(created(fake_x, content)) == 1
    assert got["targets"][0]["externalPostId"] == created(fake_x, content)[0].id


async def test_expired_token_is_refreshed_once_and_rotated(tenant, publisher, fake_x, engine, app):
    fake = fake_x.fake
    account = fake.register_account(
        username=f"rot{tenant.workspace_id[-6:]}",
        access_token=f"old-{tenant.workspace_id}",
        refresh_token=f"refresh-{tenant.workspace_id}",
    )
    imported = (
        await tenant.post(
            "/social-accounts",
            json={
                "platform": "X",
                "handle": account.username,
                "externalId": account.user_id,
                "credentials": {
                    "accessToken": f"old-{tenant.workspace_id}",
                    "refreshToken": f"refresh-{tenant.workspace_id}",
                    "expiresAt": "2030-01-01T00:00:00Z",
                },
            },
        )
    ).json()
    fake.expire_token(f"old-{tenant.workspace_id}")
    content = f"refresh me {tenant.workspace_id}"
    post = await due_post(tenant, content, platforms=[{"accountId": imported["id"]}])
    await publisher.dispatch(post["id"], 1)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["targets"][0]["status"] == "PUBLISHED", got["targets"][0]
    rows = await fetch(engine, "SELECT credentials_encrypted FROM social_accounts WHERE id = :id", id=imported["id"])
    secret = app.state.cipher.decrypt_json(bytes(rows[0].credentials_encrypted))
    assert secret["accessToken"] != f"old-{tenant.workspace_id}"
    assert secret["refreshToken"] != f"refresh-{tenant.workspace_id}"
    assert len(created(fake_x, content)) == 1


async def test_refused_refresh_fails_auth_expired_and_expires_account(tenant, publisher, fake_x, engine):
    fake = fake_x.fake
    account = fake.register_account(
        username=f"gone{tenant.workspace_id[-6:]}", access_token=f"dead-{tenant.workspace_id}"
    )
    imported = (
        await tenant.post(
            "/social-accounts",
            json={
                "platform": "X",
                "handle": account.username,
                "externalId": account.user_id,
                "credentials": {"accessToken": f"dead-{tenant.workspace_id}", "refreshToken": "never-issued"},
            },
        )
    ).json()
    fake.expire_token(f"dead-{tenant.workspace_id}")
    post = await due_post(tenant, f"nope {tenant.workspace_id}", platforms=[{"accountId": imported["id"]}])
    await publisher.dispatch(post["id"], 1)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["targets"][0]["errorCode"] == "AUTH_EXPIRED"
    assert (await tenant.get(f"/social-accounts/{imported['id']}")).json()["status"] == "EXPIRED"


async def test_first_comment_is_a_reply(tenant, publisher, fake_x):
    content = f"with comment {tenant.workspace_id}"
    post = await due_post(
        tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"], "firstComment": "link: example.com"}]
    )
    await publisher.dispatch(post["id"], 1)
    got = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert got["status"] == "PUBLISHED" and got["firstCommentAttempt"] == 1 and got["firstCommentError"] is None
    replies = [p for p in fake_x.fake.posts() if p.reply_to == got["externalPostId"]]
    assert [r.text for r in replies] == ["link: example.com"]


async def test_failed_first_comment_keeps_target_published_and_can_be_retried(tenant, publisher, fake_x, engine):
    content = f"comment fails {tenant.workspace_id}"
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    await publisher.dispatch(post["id"], 1)
    target_id = post["targets"][0]["id"]
    # The reply leg is the only create left for this account: script its refusal.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET first_comment = 'c1', first_comment_state = 'PENDING' WHERE id = :id"),
            {"id": target_id},
        )
    fake_x.fake.push_failure("content_rejected", account=token_of(tenant))
    await publisher.follow_up(target_id)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["status"] == "PUBLISHED"
    assert got["targets"][0]["status"] == "PUBLISHED"
    assert got["targets"][0]["firstCommentError"]
    assert got["targets"][0]["firstCommentAttempt"] == 1
    retry_url = f"/posts/{post['id']}/targets/{target_id}/first-comment/retry"
    assert (await tenant.post(retry_url)).status_code == 429  # inside the cooldown
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET first_comment_last_attempt_at = now() - interval '2 minutes' WHERE id = :id"),
            {"id": target_id},
        )
    assert (await tenant.post(retry_url)).status_code == 200
    await publisher.follow_up(target_id)
    got = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert got["firstCommentError"] is None and got["firstCommentAttempt"] == 2
    replies = [p for p in fake_x.fake.posts() if p.reply_to == got["externalPostId"]]
    assert [r.text for r in replies] == ["c1"]


async def test_reconciler_republishes_a_target_that_never_left(tenant, publisher, fake_x, engine):
    content = f"orphan {tenant.workspace_id}"
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    target_id = post["targets"][0]["id"]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE post_targets SET status='PUBLISHING', lease_owner='dead-worker', attempt_count=1, "
                "lease_expires_at = now() - interval '1 second', sent_at = NULL WHERE id = :id"
            ),
            {"id": target_id},
        )
    assert await publisher.reconcile() == 0  # re-queued, nothing looked up
    rows = await target_rows(engine, post["id"])
    assert rows[0].status == "SCHEDULED"
    await publisher.dispatch(post["id"], 1)
    assert (await tenant.get(f"/posts/{post['id']}")).json()["status"] == "PUBLISHED"
    assert len(created(fake_x, content)) == 1


async def test_reconciler_looks_up_a_target_that_may_have_left(tenant, publisher, fake_x, engine):
    content = f"maybe sent {tenant.workspace_id}"
    fake_x.fake.push_failure("answer_lost", account=token_of(tenant), hang_seconds=5)
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    target_id = post["targets"][0]["id"]
    # Simulate a worker killed right after sending: the fake got the post, we recorded only sent_at.
    task = asyncio.create_task(publisher.dispatch(post["id"], 1))
    for _ in range(100):
        if created(fake_x, content):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE post_targets SET lease_expires_at = now() - interval '1 second', "
                "lease_owner = 'dead-worker' WHERE id = :id"
            ),
            {"id": target_id},
        )
    assert (await target_rows(engine, post["id"]))[0].sent_at is not None
    assert await publisher.reconcile() == 1
    got = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert got["status"] == "PUBLISHED"
    assert len(created(fake_x, content)) == 1


async def test_reconciler_fails_unknown_when_post_is_absent(tenant, publisher, fake_x, engine):
    post = await due_post(
        tenant, f"never arrived {tenant.workspace_id}", platforms=[{"accountId": tenant.accounts[0]["id"]}]
    )
    target_id = post["targets"][0]["id"]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE post_targets SET status='PUBLISHING', lease_owner='dead-worker', attempt_count=1, "
                "lease_expires_at = now() - interval '1 second', sent_at = now() - interval '5 seconds' WHERE id = :id"
            ),
            {"id": target_id},
        )
    assert await publisher.reconcile() == 1
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["targets"][0]["status"] == "FAILED"
    assert got["targets"][0]["errorCode"] == "OUTCOME_UNKNOWN"
    assert got["status"] == "FAILED"
    assert created(fake_x, f"never arrived {tenant.workspace_id}") == []


async def test_unsupported_platform_fails_clearly(make_tenant, publisher):
    tenant = await make_tenant(accounts=0)
    account = await tenant.add_account("LINKEDIN_PERSON", "li")
    post = await due_post(tenant, "hello linkedin", platforms=[{"accountId": account["id"]}])
    await publisher.dispatch(post["id"], 1)
    target = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert target["status"] == "FAILED"
    assert target["errorCode"] == "PLATFORM_ERROR"
    assert "not supported" in target["errorMessage"]


async def test_sweep_picks_up_overdue_targets_without_a_job(tenant, publisher, fake_x, engine):
    content = f"no job {tenant.workspace_id}"
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET scheduled_for = now() - interval '60 seconds' WHERE post_id = :p"),
            {"p": post["id"]},
        )
    assert await publisher.sweep() >= 1
    assert len(created(fake_x, content)) == 1


# ---- Bluesky -----------------------------------------------------------------------------------------


async def bluesky_account(tenant, fake_bsky, handle: str) -> dict:
    response = await tenant.post(
        "/social-accounts",
        json={
            "platform": "BLUESKY",
            "handle": handle,
            "credentials": {"appPassword": "fake-app-password", "serviceUrl": fake_bsky.base_url},
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_bluesky_import_checks_login(make_tenant, fake_bsky, engine, app):
    tenant = await make_tenant(accounts=0)
    account = await bluesky_account(tenant, fake_bsky, f"b{tenant.workspace_id[-8:].lower()}.test")
    assert account["externalId"].startswith("did:")
    rows = await fetch(engine, "SELECT credentials_encrypted FROM social_accounts WHERE id = :id", id=account["id"])
    assert app.state.cipher.decrypt_json(bytes(rows[0].credentials_encrypted))["appPassword"] == "fake-app-password"
    refused = await tenant.post(
        "/social-accounts",
        json={
            "platform": "BLUESKY",
            "handle": "someone.test",
            "credentials": {"appPassword": "wrong", "serviceUrl": fake_bsky.base_url},
        },
    )
    assert refused.status_code == 400
    assert len((await tenant.get("/social-accounts")).json()["data"]) == 1


async def test_bluesky_publish_with_reply_and_lost_answer(make_tenant, publisher, fake_bsky):
    tenant = await make_tenant(accounts=0)
    handle = f"p{tenant.workspace_id[-8:].lower()}.test"
    account = await bluesky_account(tenant, fake_bsky, handle)
    fake_bsky.fake.push_failure("answer_lost", account=handle, hang_seconds=5)
    content = f"Hello #postwright https://example.com {tenant.workspace_id}"
    post = await due_post(tenant, content, platforms=[{"accountId": account["id"], "firstComment": "more below"}])
    await publisher.dispatch(post["id"], 1)
    target = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert target["status"] == "PUBLISHED", target
    assert target["externalUrl"].startswith("https://bsky.app/profile/")
    posts = [p for p in fake_bsky.fake.posts() if tenant.workspace_id in p.text]
    assert len(posts) == 1
    record = posts[0].body.get("record", posts[0].body)
    assert {f["features"][0]["$type"] for f in record.get("facets", [])} >= {
        "app.bsky.richtext.facet#tag",
        "app.bsky.richtext.facet#link",
    }
    replies = [p for p in fake_bsky.fake.posts() if p.reply_to]
    assert target["firstCommentError"] is None
    assert any(r.text == "more below" for r in replies), target


async def test_worker_publishes_scheduled_posts_on_time(tenant, settings, fake_x):
    from postwright.publishing.worker import run_worker

    tuned = settings.model_copy(
        update={"platform_x_base_url": fake_x.base_url, "worker_concurrency": 8, "sweep_interval_seconds": 0.5}
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(tuned, stop=stop))
    try:
        content = f"on time {tenant.workspace_id}"
        due = datetime.now(UTC) + timedelta(seconds=1.5)
        post = await tenant.create_post(content=content, scheduledFor=due.isoformat().replace("+00:00", "Z"))
        for _ in range(100):
            got = (await tenant.get(f"/posts/{post['id']}")).json()
            if got["status"] == "PUBLISHED":
                break
            await asyncio.sleep(0.1)
        assert got["status"] == "PUBLISHED", got
        sent = [r.at for r in fake_x.fake.requests(path="/2/tweets") if r.body and content in str(r.body)]
        assert len(sent) == 2
        lag = max(sent) - due
        assert timedelta(0) <= lag < timedelta(seconds=3), lag
        assert len(created(fake_x, content)) == 2
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=15)


async def test_cancel_after_claim_but_before_send_sends_nothing(tenant, publisher, fake_x, engine):
    content = f"claimed then canceled {tenant.workspace_id}"
    post = await due_post(tenant, content)
    jobs = await publisher._claim([(post["id"], 1)])
    assert len(jobs) == 2
    assert (await tenant.get(f"/posts/{post['id']}")).json()["status"] == "PUBLISHING"
    canceled = await tenant.post(f"/posts/{post['id']}/cancel", json={"reason": "stop"})
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "CANCELED"
    await publisher._run(jobs)
    assert created(fake_x, content) == []
    assert {r.status for r in await target_rows(engine, post["id"])} == {"CANCELED"}
    assert (await tenant.get(f"/posts/{post['id']}")).json()["status"] == "CANCELED"


async def test_cancel_after_send_is_409_and_the_post_completes(tenant, publisher, fake_x, engine):
    content = f"sent then cancel {tenant.workspace_id}"
    post = await due_post(tenant, content)
    jobs = await publisher._claim([(post["id"], 1)])
    prepared = [await publisher._prepare(j) for j in jobs]
    sent = await publisher._mark_sent(prepared)
    assert len(sent) == 2
    refused = await tenant.post(f"/posts/{post['id']}/cancel")
    assert refused.status_code == 409
    await asyncio.gather(*(publisher._send(j) for j in sent))
    await publisher._finish(jobs)
    assert (await tenant.get(f"/posts/{post['id']}")).json()["status"] == "PUBLISHED"
    assert len(created(fake_x, content)) == 2


async def test_stranded_first_comment_is_looked_up_never_resent(tenant, publisher, fake_x, engine):
    content = f"stranded comment {tenant.workspace_id}"
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    await publisher.dispatch(post["id"], 1)
    target_id = post["targets"][0]["id"]
    root = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]["externalPostId"]

    async def strand(text_: str, started: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE post_targets SET first_comment = :c, first_comment_state = 'SENDING', "
                    "first_comment_attempt = 1, first_comment_error = NULL, first_comment_external_id = NULL, "
                    f"first_comment_last_attempt_at = {started} WHERE id = :id"
                ),
                {"c": text_, "id": target_id},
            )

    # Never sent (or not found): FAILED for the user to check, and nothing is sent.
    await strand("c", "now() - interval '10 minutes'")
    before = len(fake_x.fake.posts())
    await publisher.follow_up(target_id)
    got = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert "not found, but it may still appear" in got["firstCommentError"]
    assert got["firstCommentAttempt"] == 1  # a lookup is not a new attempt
    assert len(fake_x.fake.posts()) == before
    # Sent just before the worker died: the lookup finds it and records it, without sending again.
    landed = f"landed comment {tenant.workspace_id}"
    fake_x.fake.push_failure("answer_lost", account=token_of(tenant), hang_seconds=0.1)
    await strand(landed, "now() - interval '10 minutes'")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET first_comment_state = 'PENDING' WHERE id = :id"), {"id": target_id}
        )
    await publisher.follow_up(target_id)  # its answer is lost; the lookup settles it
    [sent] = [p for p in fake_x.fake.posts() if p.text == landed]
    assert sent.reply_to == root
    await strand(landed, "now() - interval '4 seconds'")
    await publisher.follow_up(target_id)
    got = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert got["firstCommentError"] is None
    rows = await fetch(engine, "SELECT first_comment_external_id FROM post_targets WHERE id = :id", id=target_id)
    assert rows[0][0] == sent.id
    assert len([p for p in fake_x.fake.posts() if p.text == landed]) == 1
    # A comment still being sent by a live worker is left alone.
    await strand("live", "now()")
    await publisher.follow_up(target_id)
    rows = await fetch(engine, "SELECT first_comment_state FROM post_targets WHERE id = :id", id=target_id)
    assert rows[0][0] == "SENDING"
    assert not [p for p in fake_x.fake.posts() if p.text == "live"]


async def test_editor_publish_now_in_approval_workspace_waits(tenant, publisher, fake_x):
    assert (await tenant.patch("/workspace", json={"requireApproval": True})).status_code == 200
    editor = await tenant.make_key(role="EDITOR", email="ed-pub@example.com")
    content = f"needs approval now {tenant.workspace_id}"
    post = (
        await tenant.post(
            "/posts", key=editor, json={"content": content, "platforms": [{"accountId": tenant.accounts[0]["id"]}]}
        )
    ).json()
    published = (await tenant.post(f"/posts/{post['id']}/publish", key=editor, json={"leadSeconds": 0})).json()
    assert published["status"] == "NEEDS_APPROVAL"
    assert {t["status"] for t in published["targets"]} == {"DRAFT"}
    assert await publisher.dispatch(post["id"], 2) == 0
    assert await publisher.sweep() >= 0
    assert created(fake_x, content) == []


async def test_slow_send_keeps_its_lease(tenant, settings, engine, app, fake_x):
    tuned = slow_platform_settings(settings, fake_x)
    content = f"slow platform {tenant.workspace_id}"
    fake_x.fake.set_knobs(account=token_of(tenant), latency_ms=2500)
    try:
        post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
        async with aiohttp.ClientSession() as http:
            worker = build_publisher(tuned, engine, app, http, "slow-worker")
            other = build_publisher(tuned, engine, app, http, "other-worker")
            sending = asyncio.create_task(worker.dispatch(post["id"], 1))
            for _ in range(12):  # the reconciler of another worker keeps looking during the slow send
                await asyncio.sleep(0.25)
                assert await other.reconcile() == 0
            await sending
    finally:
        fake_x.fake.set_knobs(account=token_of(tenant), latency_ms=0)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["targets"][0]["status"] == "PUBLISHED"
    assert len(created(fake_x, content)) == 1


async def test_reconciler_gives_up_on_a_target_that_keeps_crashing_workers(tenant, publisher, engine):
    post = await due_post(tenant, f"poison {tenant.workspace_id}", platforms=[{"accountId": tenant.accounts[0]["id"]}])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE post_targets SET status='PUBLISHING', lease_owner='dead', auto_attempts = 3, attempt_count = 3, "
                "lease_expires_at = now() - interval '1 second', sent_at = NULL WHERE post_id = :p"
            ),
            {"p": post["id"]},
        )
    await publisher.reconcile()
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    assert got["targets"][0]["status"] == "FAILED"
    assert "interrupted" in got["targets"][0]["errorMessage"]


async def test_a_job_that_fires_early_waits_for_the_due_time(tenant, publisher, fake_x):
    content = f"early job {tenant.workspace_id}"
    due = datetime.now(UTC) + timedelta(seconds=0.4)
    post = await tenant.create_post(
        content=content,
        scheduledFor=due.isoformat().replace("+00:00", "Z"),
        platforms=[{"accountId": tenant.accounts[0]["id"]}],
    )
    assert await publisher.dispatch(post["id"], 1) == 1  # fired before due: waits, then claims
    sent = [r.at for r in fake_x.fake.requests(path="/2/tweets") if r.body and content in str(r.body)]
    assert len(sent) == 1 and sent[0] >= due
    # A job far too early (another schedule) does not hold the worker.
    later = await tenant.create_post(
        content=content + " later", scheduledFor=future(minutes=5), platforms=[{"accountId": tenant.accounts[0]["id"]}]
    )
    assert await publisher.dispatch(later["id"], 1) == 0
