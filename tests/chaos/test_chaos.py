"""Chaos: two worker processes, 3,000 targets due in the same second, workers SIGKILLed mid-burst.

Run with `pytest -m chaos` (`.ci/run` does). The verdict comes from the fakes' receipt logs: every target
is published exactly once, or FAILED with OUTCOME_UNKNOWN only where a kill fell between "about to send"
and "recorded" — and no post exists twice on any platform. Every tenth post also has a two-part thread
and a first comment on each target, so the kills hit follow-ups too: each part and comment ends DONE
(and exists once, replying to the right post) or FAILED with a reason, never twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from postwright.db.models import PostTarget
from postwright.publishing.engine import FOLLOW_UPS_OPEN
from postwright.testing.fakes import RunningFake, serve_fake

pytestmark = pytest.mark.chaos

POSTS = 1000  # times 3 accounts = 3,000 targets
KILLS = 4
THREAD_EVERY = 10  # these posts also get a 2-part thread and a first comment


@pytest.fixture(scope="module")
def fake_x() -> Iterator[RunningFake]:
    with serve_fake("X") as running:
        running.fake.set_knobs(latency_ms=40)
        yield running


@pytest.fixture(scope="module")
def fake_bsky() -> Iterator[RunningFake]:
    with serve_fake("BLUESKY") as running:
        running.fake.set_knobs(latency_ms=40)
        yield running


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "postwright", "worker", "--concurrency", "24"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_burst_with_killed_workers_publishes_exactly_once(
    make_tenant, database_url, data_dir, engine, fake_x, fake_bsky
):
    tenant = await make_tenant(accounts=2)
    bsky = await tenant.post(
        "/social-accounts",
        json={
            "platform": "BLUESKY",
            "handle": "chaos.test",
            "credentials": {"appPassword": "fake-chaos", "serviceUrl": fake_bsky.base_url},
        },
    )
    assert bsky.status_code == 201, bsky.text
    accounts = [a["id"] for a in tenant.accounts] + [bsky.json()["id"]]

    due = datetime.now(UTC) + timedelta(seconds=25)
    due_text = due.isoformat().replace("+00:00", "Z")

    def target(i: int, account: str) -> dict:
        if i % THREAD_EVERY:
            return {"accountId": account}
        thread = [{"text": f"part {k} of {i} {tenant.workspace_id}"} for k in (2, 3)]
        return {
            "accountId": account,
            "firstComment": f"comment on {i} {tenant.workspace_id}",
            "platformOptions": {"thread": thread},
        }

    async def create(i: int) -> None:
        response = await tenant.post(
            "/posts",
            json={
                "content": f"chaos {i} {tenant.workspace_id}",
                "scheduledFor": due_text,
                "platforms": [target(i, a) for a in accounts],
            },
        )
        assert response.status_code == 201, response.text

    for start in range(0, POSTS, 50):
        await asyncio.gather(*(create(i) for i in range(start, min(start + 50, POSTS))))
    assert datetime.now(UTC) < due, "creating the posts took longer than the lead time"

    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWRIGHT_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "POSTWRIGHT_DATA_DIR": str(data_dir),
            "POSTWRIGHT_PLATFORM_X_BASE_URL": fake_x.base_url,
            "POSTWRIGHT_X_CLIENT_ID": "chaos",
            "POSTWRIGHT_PUBLISH_LEASE_SECONDS": "4",
            "POSTWRIGHT_PLATFORM_TIMEOUT_SECONDS": "2",
            "POSTWRIGHT_SWEEP_INTERVAL_SECONDS": "0.5",
            "POSTWRIGHT_LOG_LEVEL": "WARNING",
        }
    )
    workers = [start_worker(env), start_worker(env)]
    rng = random.Random(7)
    try:
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(timeout=10)
            workers[victim] = start_worker(env)

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                pending = (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM post_targets WHERE workspace_id = :ws AND status IN ('SCHEDULED', 'PUBLISHING')"
                        ),
                        {"ws": tenant.workspace_id},
                    )
                ).scalar_one()
            if pending == 0:
                break
            await asyncio.sleep(1)
        assert pending == 0, f"{pending} targets never finished"
        # Follow-ups stranded by a kill are resumed by the sweep once their lease runs out.
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                open_follow_ups = (
                    await conn.execute(
                        select(func.count())
                        .select_from(PostTarget)
                        .where(FOLLOW_UPS_OPEN, PostTarget.workspace_id == tenant.workspace_id)
                    )
                ).scalar_one()
            if open_follow_ups == 0:
                break
            await asyncio.sleep(1)
        assert open_follow_ups == 0, f"{open_follow_ups} targets' thread or comment never finished"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT t.id, t.status, t.error_code, t.external_post_id, t.sent_at, t.platform, p.caption, "
                    "t.thread_state, t.first_comment_state, t.first_comment_external_id, t.first_comment_error "
                    "FROM post_targets t JOIN posts p ON p.id = t.post_id WHERE t.workspace_id = :ws"
                ),
                {"ws": tenant.workspace_id},
            )
        ).all()
    assert len(rows) == POSTS * 3

    everything = [p for p in fake_x.fake.posts() + fake_bsky.fake.posts() if tenant.workspace_id in p.text]
    counts = Counter((p.account, p.text) for p in everything)
    assert [k for k, n in counts.items() if n > 1] == [], "duplicate posts (roots, thread parts or comments)"
    x_posts = [p for p in fake_x.fake.posts() if p.text.startswith("chaos ") and tenant.workspace_id in p.text]
    bsky_posts = [p for p in fake_bsky.fake.posts() if p.text.startswith("chaos ") and tenant.workspace_id in p.text]
    replies = {p.id: p for p in everything if not p.text.startswith("chaos ")}
    threaded = [r for r in rows if r.status == "PUBLISHED" and int(r.caption.split()[1]) % THREAD_EVERY == 0]
    assert threaded and all(r.thread_state for r in threaded)
    for row in threaded:
        parent = row.external_post_id
        for entry in row.thread_state:
            assert entry["state"] in ("DONE", "FAILED"), row
            if entry["state"] == "FAILED":
                assert entry["error"], row
                break  # a failed part halts the thread
            assert replies[entry["externalPostId"]].reply_to == parent, row
            parent = entry["externalPostId"]
        assert row.first_comment_state in ("DONE", "FAILED"), row
        if row.first_comment_state == "DONE":
            assert replies[row.first_comment_external_id].reply_to == row.external_post_id, row
        else:
            assert row.first_comment_error, row

    existing = {p.id for p in x_posts} | {p.id for p in bsky_posts}
    statuses = Counter((r.status, r.error_code) for r in rows)
    published = [r for r in rows if r.status == "PUBLISHED"]
    unknown = [r for r in rows if r.status == "FAILED" and r.error_code == "OUTCOME_UNKNOWN"]
    assert len(published) + len(unknown) == len(rows), statuses
    assert all(r.external_post_id in existing for r in published), "a PUBLISHED target points at nothing"
    assert all(r.sent_at is not None for r in unknown), "OUTCOME_UNKNOWN without a send"
    # Each kill can strand at most the requests in flight in that worker.
    assert len(unknown) <= KILLS * 24, statuses
    # Everything the platforms hold is accounted for by exactly one PUBLISHED target (or an unknown one).
    assert len(x_posts) + len(bsky_posts) >= len(published)
    assert len(x_posts) + len(bsky_posts) <= len(published) + len(unknown)
    parts = Counter(e["state"] for r in threaded for e in r.thread_state)
    comments = Counter(r.first_comment_state for r in threaded)
    print(
        f"\nchaos: {dict(statuses)}; platform posts {len(x_posts) + len(bsky_posts)}; parts {dict(parts)}; "
        f"comments {dict(comments)}"
    )
