"""Threads (`platformOptions.thread`): a chain of posts, each part once, in order, after the root lands."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiohttp
from sqlalchemy import text

from .conftest import build_publisher, slow_platform_settings
from .helpers import fetch, future
from .test_media import png, upload
from .test_publishing import bluesky_account, due_post, token_of


def thread_of(*texts: str, **extra: object) -> dict:
    return {"platform": "X", "thread": [{"text": t, **extra} for t in texts]}


async def state_of(engine, target_id: str) -> list[dict]:
    rows = await fetch(engine, "SELECT thread_state FROM post_targets WHERE id = :id", id=target_id)
    return rows[0].thread_state


async def set_state(engine, target_id: str, state: list[dict], options: dict | None = None) -> None:
    sql = "UPDATE post_targets SET thread_state = CAST(:s AS jsonb)"
    params = {"s": json.dumps(state), "id": target_id}
    if options is not None:
        sql += ", platform_options = CAST(:o AS jsonb)"
        params["o"] = json.dumps(options)
    async with engine.begin() as conn:
        await conn.execute(text(sql + " WHERE id = :id"), params)


async def follow_up_jobs(engine, target_id: str) -> list:
    return await fetch(
        engine,
        "SELECT execute_after - now() AS wait FROM pgqueuer WHERE entrypoint = 'publishing.first_comment' "
        "AND payload = :p ORDER BY id",
        p=json.dumps({"targetId": target_id}).encode(),
    )


async def published_root(tenant, publisher, content: str) -> tuple[dict, str]:
    """A published X post without a thread yet (tests then give it thread parts in a scripted state)."""
    post = await due_post(tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"]}])
    await publisher.dispatch(post["id"], 1)
    return post, post["targets"][0]["id"]


async def test_x_thread_is_a_chain_posted_once_then_the_first_comment(tenant, publisher, fake_x, engine):
    uploaded = await upload(tenant, png())
    image = (await tenant.post(f"/media/{uploaded['presign']['id']}/complete")).json()
    content = f"root {tenant.workspace_id}"
    options = {
        "platform": "X",
        "thread": [
            {"text": f"two {tenant.workspace_id}"},
            {"text": f"three {tenant.workspace_id}", "mediaIds": [image["id"]]},
        ],
    }
    post = await due_post(
        tenant,
        content,
        platforms=[{"accountId": tenant.accounts[0]["id"], "platformOptions": options, "firstComment": "more"}],
    )
    assert post["targets"][0]["thread"][0] == {
        "position": 1,
        "text": f"two {tenant.workspace_id}",
        "status": "WAITING",
        "externalPostId": None,
        "externalUrl": None,
        "error": None,
        "attemptCount": 0,
    }
    await publisher.dispatch(post["id"], 1)
    target_id = post["targets"][0]["id"]
    # The chain is not posted inside the dispatch batch: a follow-ups job due now takes it.
    assert [e["state"] for e in await state_of(engine, target_id)] == ["PENDING", "PENDING"]
    assert [j.wait <= timedelta(0) for j in await follow_up_jobs(engine, target_id)] == [True]
    await publisher.follow_up(target_id, from_job=True)
    target = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert target["status"] == "PUBLISHED" and target["threadError"] is None
    root = target["externalPostId"]
    parts = target["thread"]
    assert [p["status"] for p in parts] == ["DONE", "DONE"]
    assert all(p["externalUrl"].endswith(p["externalPostId"]) and p["attemptCount"] == 1 for p in parts)
    by_id = {p.id: p for p in fake_x.fake.posts()}
    assert by_id[parts[0]["externalPostId"]].reply_to == root
    assert by_id[parts[1]["externalPostId"]].reply_to == parts[0]["externalPostId"]
    assert by_id[parts[1]["externalPostId"]].media_ids and not by_id[parts[0]["externalPostId"]].media_ids
    comments = [p for p in fake_x.fake.posts() if p.reply_to == root and p.text == "more"]
    assert len(comments) == 1
    assert comments[0].created_at >= by_id[parts[1]["externalPostId"]].created_at  # after the thread
    before = len(fake_x.fake.posts())
    await publisher.follow_up(target["id"], from_job=True)  # the backstop job finds nothing left
    assert len(fake_x.fake.posts()) == before
    status = (await tenant.get(f"/posts/{post['id']}/status")).json()["targets"][0]
    assert [p["status"] for p in status["thread"]] == ["DONE", "DONE"]


async def test_bluesky_thread_replies_carry_root_and_parent(make_tenant, publisher, fake_bsky):
    tenant = await make_tenant(accounts=0)
    account = await bluesky_account(tenant, fake_bsky, f"t{tenant.workspace_id[-8:].lower()}.test")
    options = {"platform": "BLUESKY", "thread": [{"text": "part two"}, {"text": "part three #tag"}]}
    post = await due_post(
        tenant, f"root {tenant.workspace_id}", platforms=[{"accountId": account["id"], "platformOptions": options}]
    )
    await publisher.dispatch(post["id"], 1)
    await publisher.follow_up(post["targets"][0]["id"], from_job=True)
    target = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert [p["status"] for p in target["thread"]] == ["DONE", "DONE"], target
    root, second, third = target["externalPostId"], *(p["externalPostId"] for p in target["thread"])
    records = {p.id: p.body.get("record", p.body) for p in fake_bsky.fake.posts()}
    assert records[second]["reply"]["root"]["uri"] == root and records[second]["reply"]["parent"]["uri"] == root
    assert records[third]["reply"]["root"]["uri"] == root and records[third]["reply"]["parent"]["uri"] == second
    assert records[third]["facets"][0]["features"][0]["tag"] == "tag"


async def test_thread_shape_and_rules_are_checked(make_tenant, engine):
    tenant = await make_tenant(accounts=1)
    account = tenant.accounts[0]["id"]

    async def create(options: dict, scheduled: bool = True):
        body = {"content": "root", "platforms": [{"accountId": account, "platformOptions": options}]}
        if scheduled:
            body["scheduledFor"] = future(hours=1)
        return await tenant.post("/posts", json=body)

    cases = [
        ({"thread": "not a list"}, "list of 1 to 24"),
        ({"thread": []}, "list of 1 to 24"),
        ({"thread": [{"text": "x"}] * 25}, "list of 1 to 24"),
        ({"thread": [{"body": "x"}]}, "thread part 1 must be an object"),
        ({"thread": [{"text": " "}]}, "thread part 1 needs text or media"),
        ({"thread": [{"text": "ok", "mediaIds": ["m"] * 5}]}, "mediaIds must be a list of at most 4"),
        ({"thread": [{"text": "ok", "mediaIds": ["med_missing"]}]}, "no media med_missing"),
    ]
    for options, message in cases:
        response = await create(options, scheduled=False)
        assert response.status_code == 400, (options, response.text)
        assert message in json.dumps(response.json()["details"]), (options, response.json())
    assert response.json()["details"][0]["field"] == "platforms[0].platformOptions.thread"
    bad_shape = await create({"thread": [{"text": "ok"}, 3]}, scheduled=False)
    assert bad_shape.json()["details"][0]["field"] == "platforms[0].platformOptions.thread"
    # Platform rules run when scheduling, part by part; a draft may hold a part that is too long.
    too_long = {"thread": [{"text": "fine"}, {"text": "y" * 281}]}
    refused = await create(too_long)
    assert refused.status_code == 400 and "Thread part 2:" in refused.json()["message"]
    assert (await create(too_long, scheduled=False)).status_code == 201
    rows = await fetch(engine, "SELECT count(*) AS n FROM posts WHERE workspace_id = :w", w=tenant.workspace_id)
    assert rows[0].n == 1  # only the draft was stored


async def test_threads_are_refused_on_platforms_without_them(make_tenant):
    tenant = await make_tenant(accounts=1, platform="INSTAGRAM")
    response = await tenant.post(
        "/posts",
        json={
            "content": "root",
            "platforms": [{"accountId": tenant.accounts[0]["id"], "platformOptions": {"thread": [{"text": "2"}]}}],
        },
    )
    assert response.status_code == 400
    assert "threads are supported on BLUESKY and X, not INSTAGRAM" in response.text


async def test_failed_part_halts_the_thread_and_retry_resumes_there(tenant, publisher, fake_x, engine):
    post, target_id = await published_root(tenant, publisher, f"halt {tenant.workspace_id}")
    options = thread_of("p1 ok", "p2 refused", "p3 later")
    first = fake_x.fake.posts()[-1]
    state = [
        {"state": "DONE", "attempts": 1, "externalPostId": first.id, "externalUrl": "u"},
        {"state": "PENDING", "attempts": 0},
        {"state": "PENDING", "attempts": 0},
    ]
    await set_state(engine, target_id, state, options)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET first_comment = 'fc', first_comment_state = 'PENDING' WHERE id = :id"),
            {"id": target_id},
        )
    retry_url = f"/posts/{post['id']}/targets/{target_id}/thread/retry"
    assert (await tenant.post(retry_url)).status_code == 409  # nothing failed yet
    fake_x.fake.push_failure("content_rejected", account=token_of(tenant))
    before = len(fake_x.fake.posts())
    await publisher.follow_up(target_id)
    got = (await tenant.get(f"/posts/{post['id']}")).json()
    target = got["targets"][0]
    assert got["status"] == "PUBLISHED" and target["status"] == "PUBLISHED"
    assert [p["status"] for p in target["thread"]] == ["DONE", "FAILED", "PENDING"]
    assert target["threadError"].startswith("Thread part 2:")
    # The first comment still goes (a reply to the root), the halted parts do not.
    new = fake_x.fake.posts()[before:]
    assert [(p.text, p.reply_to) for p in new] == [("fc", target["externalPostId"])]
    assert (await tenant.post(retry_url)).status_code == 429  # cooldown
    stale = await state_of(engine, target_id)
    stale[1]["lastAttemptAt"] = "2020-01-01T00:00:00+00:00"
    await set_state(engine, target_id, stale)
    assert (await tenant.post(retry_url)).status_code == 200
    await publisher.follow_up(target_id, from_job=True)
    target = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert [p["status"] for p in target["thread"]] == ["DONE", "DONE", "DONE"]
    assert target["thread"][1]["attemptCount"] == 2 and target["threadError"] is None
    new = fake_x.fake.posts()[before + 1 :]
    assert [p.text for p in new] == ["p2 refused", "p3 later"]
    assert new[0].reply_to == first.id and new[1].reply_to == new[0].id
    audit = (await tenant.get("/audit-log")).json()["data"]
    assert any(e["action"] == "target.thread_retry" for e in audit)


async def test_rate_limited_part_waits_and_is_retried_by_a_job(tenant, publisher, fake_x, engine):
    _, target_id = await published_root(tenant, publisher, f"limited {tenant.workspace_id}")
    await set_state(engine, target_id, [{"state": "PENDING", "attempts": 0}], thread_of("after the limit"))
    fake_x.fake.push_failure("rate_limited", account=token_of(tenant), retry_after=1, with_retry_after=True)
    await publisher.follow_up(target_id)
    state = await state_of(engine, target_id)
    assert state[0]["state"] == "PENDING" and state[0]["notBefore"] and state[0]["attempts"] == 1
    assert await follow_up_jobs(engine, target_id), "a follow-up job is queued for when the limit resets"
    await publisher.follow_up(target_id, from_job=True)  # too early: nothing is sent
    assert (await state_of(engine, target_id))[0]["state"] == "PENDING"
    state[0]["notBefore"] = "2020-01-01T00:00:00+00:00"
    await set_state(engine, target_id, state)
    await publisher.follow_up(target_id, from_job=True)
    state = await state_of(engine, target_id)
    assert state[0]["state"] == "DONE" and state[0]["attempts"] == 2
    assert len([p for p in fake_x.fake.posts() if p.text == "after the limit"]) == 1


async def test_lost_answer_on_a_part_is_looked_up_not_resent(tenant, publisher, fake_x, engine):
    _, target_id = await published_root(tenant, publisher, f"lost part {tenant.workspace_id}")
    part = f"lost answer part {tenant.workspace_id}"
    await set_state(engine, target_id, [{"state": "PENDING", "attempts": 0}], thread_of(part))
    fake_x.fake.push_failure("answer_lost", account=token_of(tenant), hang_seconds=5)
    await publisher.follow_up(target_id)
    state = await state_of(engine, target_id)
    sent = [p for p in fake_x.fake.posts() if p.text == part]
    assert len(sent) == 1
    assert state[0]["state"] == "DONE" and state[0]["externalPostId"] == sent[0].id


async def test_stranded_part_is_looked_up_never_resent(tenant, publisher, fake_x, engine):
    _, target_id = await published_root(tenant, publisher, f"stranded {tenant.workspace_id}")
    landed = f"landed {tenant.workspace_id}"
    await set_state(engine, target_id, [{"state": "PENDING", "attempts": 0}], thread_of(landed))
    await publisher.follow_up(target_id)
    [sent] = [p for p in fake_x.fake.posts() if p.text == landed]
    # Its sender died before recording: the part is SENDING, the sender's lease (3 s here) is over.
    recently = (datetime.now(UTC) - timedelta(seconds=4)).isoformat()
    stranded = {"state": "SENDING", "attempts": 1, "lastAttemptAt": recently}
    await set_state(engine, target_id, [stranded, {"state": "PENDING", "attempts": 0}], thread_of(landed, "next"))
    before = len(fake_x.fake.posts())
    await publisher.follow_up(target_id)
    state = await state_of(engine, target_id)
    assert [e["state"] for e in state] == ["DONE", "DONE"] and state[0]["externalPostId"] == sent.id
    assert state[0]["attempts"] == 1  # a lookup is not a new attempt
    [following] = fake_x.fake.posts()[before:]
    assert following.text == "next" and following.reply_to == sent.id
    # A stranded part that is not found stays FAILED (X has no idempotency key): the user decides.
    await set_state(engine, target_id, [stranded], thread_of(f"never arrived {tenant.workspace_id}"))
    before = len(fake_x.fake.posts())
    await publisher.follow_up(target_id)
    state = await state_of(engine, target_id)
    assert state[0]["state"] == "FAILED" and "not found" in state[0]["error"]
    assert len(fake_x.fake.posts()) == before
    # A part a live worker is sending right now is left alone; the backstop job checks again after its lease.
    await set_state(engine, target_id, [{**stranded, "lastAttemptAt": datetime.now(UTC).isoformat()}])
    await publisher.follow_up(target_id, from_job=True)
    assert (await state_of(engine, target_id))[0]["state"] == "SENDING"
    assert len(fake_x.fake.posts()) == before
    checks = await follow_up_jobs(engine, target_id)
    assert any(timedelta(seconds=1) < c.wait <= timedelta(seconds=3) for c in checks), checks


async def test_a_part_broken_after_scheduling_fails_the_target_before_anything_is_sent(
    tenant, publisher, fake_x, engine
):
    content = f"checked again {tenant.workspace_id}"
    options = thread_of("fine")
    post = await due_post(
        tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"], "platformOptions": options}]
    )
    async with engine.begin() as conn:  # e.g. rules tightened between scheduling and the due time
        await conn.execute(
            text("UPDATE post_targets SET platform_options = CAST(:o AS jsonb) WHERE post_id = :p"),
            {"o": json.dumps(thread_of("z" * 300)), "p": post["id"]},
        )
    await publisher.dispatch(post["id"], 1)
    target = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert target["status"] == "FAILED" and target["errorCode"] == "VALIDATION_FAILED"
    assert "Thread part 1:" in target["errorMessage"]
    assert not [p for p in fake_x.fake.posts() if p.text == content]


async def test_stranded_bluesky_part_is_resent_under_its_rkey(make_tenant, publisher, fake_bsky, engine):
    tenant = await make_tenant(accounts=0)
    account = await bluesky_account(tenant, fake_bsky, f"s{tenant.workspace_id[-8:].lower()}.test")
    post = await due_post(tenant, f"root {tenant.workspace_id}", platforms=[{"accountId": account["id"]}])
    await publisher.dispatch(post["id"], 1)
    target_id = post["targets"][0]["id"]
    options = {"platform": "BLUESKY", "thread": [{"text": f"after a crash {tenant.workspace_id}"}]}
    old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    rkey = "3kabcdefghi22"
    stranded = {"state": "SENDING", "attempts": 1, "lastAttemptAt": old, "material": rkey}
    await set_state(engine, target_id, [stranded], options)
    await publisher.follow_up(target_id)
    state = await state_of(engine, target_id)
    assert state[0]["state"] == "DONE" and state[0]["externalPostId"].endswith(f"/{rkey}")
    await set_state(engine, target_id, [stranded])  # and once more: now the lookup finds it
    await publisher.follow_up(target_id)
    assert (await state_of(engine, target_id))[0]["state"] == "DONE"
    assert len([p for p in fake_bsky.fake.posts() if p.text == options["thread"][0]["text"]]) == 1


async def test_a_slow_part_keeps_its_claim(tenant, settings, engine, app, fake_x, publisher):
    _, target_id = await published_root(tenant, publisher, f"slow part {tenant.workspace_id}")
    slow = f"slow part body {tenant.workspace_id}"
    await set_state(engine, target_id, [{"state": "PENDING", "attempts": 0}], thread_of(slow))
    tuned = slow_platform_settings(settings, fake_x)

    def lookups() -> int:
        return len([r for r in fake_x.fake.requests() if r.method == "GET" and r.path.endswith("/tweets")])

    before = lookups()
    fake_x.fake.set_knobs(account=token_of(tenant), latency_ms=2500)
    try:
        async with aiohttp.ClientSession() as http:
            worker = build_publisher(tuned, engine, app, http, "slow-worker")
            other = build_publisher(tuned, engine, app, http, "other-worker")
            sending = asyncio.create_task(worker.follow_up(target_id))
            for _ in range(12):  # the backstop job on another worker keeps looking during the slow send
                await asyncio.sleep(0.25)
                await other.follow_up(target_id, from_job=True)
            await sending
    finally:
        fake_x.fake.set_knobs(account=token_of(tenant), latency_ms=0)
    state = await state_of(engine, target_id)
    assert state[0]["state"] == "DONE" and state[0]["attempts"] == 1
    assert len([p for p in fake_x.fake.posts() if p.text == slow]) == 1
    assert lookups() == before  # nobody took the part over while it was being sent


async def age(engine, target_id: str, seconds: int = 600) -> None:
    """Make the target look untouched for a while (its job or worker died)."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET updated_at = now() - make_interval(secs => :s) WHERE id = :id"),
            {"s": seconds, "id": target_id},
        )


async def test_the_sweep_resumes_a_thread_and_comment_whose_job_died(tenant, publisher, fake_x, engine):
    _, target_id = await published_root(tenant, publisher, f"orphaned {tenant.workspace_id}")
    orphan = f"orphaned part {tenant.workspace_id}"
    await set_state(engine, target_id, [{"state": "PENDING", "attempts": 0}], thread_of(orphan))
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET first_comment = 'late', first_comment_state = 'PENDING' WHERE id = :id"),
            {"id": target_id},
        )
    await publisher.sweep_follow_ups()  # touched just now: its job may still be running
    assert (await state_of(engine, target_id))[0]["state"] == "PENDING"
    await age(engine, target_id)
    await publisher.sweep_follow_ups()
    state = await state_of(engine, target_id)
    assert state[0]["state"] == "DONE"
    [part] = [p for p in fake_x.fake.posts() if p.text == orphan]
    root = (await fetch(engine, "SELECT external_post_id FROM post_targets WHERE id = :id", id=target_id))[0][0]
    assert [p.text for p in fake_x.fake.posts() if p.reply_to == root] == [orphan, "late"]
    assert part.reply_to == root
    await age(engine, target_id)
    await publisher.sweep_follow_ups()  # nothing left open: nothing more is sent
    assert len([p for p in fake_x.fake.posts() if p.reply_to == root]) == 2


async def test_a_confirmed_part_is_recorded_even_after_a_takeover(tenant, publisher, fake_x, engine, monkeypatch):
    _, target_id = await published_root(tenant, publisher, f"takeover {tenant.workspace_id}")
    part = f"confirmed late {tenant.workspace_id}"
    await set_state(engine, target_id, [{"state": "PENDING", "attempts": 0}], thread_of(part))
    deliver = publisher.follow_ups._deliver

    async def slow_deliver(send):
        entry = await deliver(send)
        # Meanwhile another worker took the part over and its lookup missed the post.
        taken = [{"state": "FAILED", "attempts": 1, "lastAttemptAt": "2030-01-01T00:00:00+00:00", "error": "x"}]
        await set_state(engine, target_id, taken)
        return entry

    monkeypatch.setattr(publisher.follow_ups, "_deliver", slow_deliver)
    await publisher.follow_up(target_id)
    state = await state_of(engine, target_id)
    [sent] = [p for p in fake_x.fake.posts() if p.text == part]
    assert state[0]["state"] == "DONE" and state[0]["externalPostId"] == sent.id


async def test_thread_media_is_protected_and_checked_before_the_root(tenant, publisher, fake_x, engine):
    uploaded = await upload(tenant, png())
    media_id = (await tenant.post(f"/media/{uploaded['presign']['id']}/complete")).json()["id"]
    content = f"media in thread {tenant.workspace_id}"
    options = {"platform": "X", "thread": [{"text": "with picture", "mediaIds": [media_id]}]}
    post = await due_post(
        tenant, content, platforms=[{"accountId": tenant.accounts[0]["id"], "platformOptions": options}]
    )
    refused = await tenant.delete(f"/media/{media_id}")
    assert refused.status_code == 409, refused.text
    async with engine.begin() as conn:  # gone anyway (e.g. deleted straight from storage by an operator)
        await conn.execute(text("UPDATE media_assets SET deleted_at = now() WHERE id = :id"), {"id": media_id})
    await publisher.dispatch(post["id"], 1)
    target = (await tenant.get(f"/posts/{post['id']}")).json()["targets"][0]
    assert target["status"] == "FAILED" and target["errorCode"] == "VALIDATION_FAILED"
    assert media_id in target["errorMessage"]
    assert not [p for p in fake_x.fake.posts() if p.text == content]


async def test_a_confirmed_comment_is_recorded_even_after_a_takeover(tenant, publisher, fake_x, engine, monkeypatch):
    _, target_id = await published_root(tenant, publisher, f"comment takeover {tenant.workspace_id}")
    comment = f"confirmed comment {tenant.workspace_id}"
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE post_targets SET first_comment = :c, first_comment_state = 'PENDING' WHERE id = :id"),
            {"c": comment, "id": target_id},
        )
    deliver = publisher.follow_ups._deliver_comment

    async def slow_deliver(*args, **kwargs):
        outcome = await deliver(*args, **kwargs)
        # Meanwhile another worker took the comment over and its lookup missed it.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE post_targets SET first_comment_state = 'FAILED', first_comment_error = 'not found', "
                    "first_comment_last_attempt_at = now() + interval '1 hour' WHERE id = :id"
                ),
                {"id": target_id},
            )
        return outcome

    monkeypatch.setattr(publisher.follow_ups, "_deliver_comment", slow_deliver)
    await publisher.follow_up(target_id)
    [sent] = [p for p in fake_x.fake.posts() if p.text == comment]
    rows = await fetch(
        engine,
        "SELECT first_comment_state, first_comment_external_id, first_comment_error FROM post_targets WHERE id = :id",
        id=target_id,
    )
    assert tuple(rows[0]) == ("DONE", sent.id, None)
