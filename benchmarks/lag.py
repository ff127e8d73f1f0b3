"""Lag: how late a single post reaches the platform on an idle system.

Starts a fake X in its own process (no latency), migrates a fresh database `pw_bench_<random>` (dropped at
the end), imports one account with a `fake-` token and starts one `postwright worker`. Then, one after
another, --posts posts are created through `posts_service.create` (what `POST /posts` runs), each due
--min-ahead..--max-ahead seconds later (uniformly spread, so due times fall anywhere in the worker's
polling cycles); the next one is created once the previous one is recorded. Reports p50/p99/max of
(time the fake received the create request - due time), and of (target recorded PUBLISHED - due time).
Goals of the issue: p50 < 100 ms, p99 < 500 ms.

    python benchmarks/lag.py                  # 30 posts
    python benchmarks/lag.py --posts 100 --json

Needs PostgreSQL reachable at --admin-url (default postgresql://postgres@127.0.0.1:5432/postgres).
Exits 0 when every goal is met, 1 when one is missed, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c
import aiohttp
import asyncpg

GOAL_P50_MS = 100.0
GOAL_P99_MS = 500.0
PUBLISH_TIMEOUT_S = 30.0  # per post, after its due time


@dataclass
class Sample:
    post_id: str
    due: datetime
    fake_lag_ms: float | None = None  # fake received the create - due
    recorded_lag_ms: float | None = None  # target row updated to its final status - due
    pick_lag_ms: float | None = None  # pgqueuer picked the post's dispatch job - due
    claim_lag_ms: float | None = None  # the target was claimed (attempt opened) - due
    status: str = ""


@dataclass
class LagResult:
    posts: int
    published: int
    fake_p50_ms: float
    fake_p99_ms: float
    fake_min_ms: float
    fake_max_ms: float
    recorded_p50_ms: float
    recorded_p99_ms: float
    pick_p50_ms: float
    pick_p99_ms: float
    samples_ms: list[float]
    goals: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(self.goals.values())


async def _pick_and_claim(connection: asyncpg.Connection, post_id: str) -> tuple[datetime | None, datetime | None]:
    """When pgqueuer picked the post's dispatch job, and when its target was first claimed."""
    row = await connection.fetchrow(
        f"SELECT (SELECT min(l.created) FROM {c.QUEUE_TABLE}_log l WHERE l.job_id = t.job_id AND l.status = 'picked')"
        " AS picked, (SELECT min(a.started_at) FROM publish_attempts a WHERE a.target_id = t.id) AS claimed"
        " FROM post_targets t WHERE t.post_id = $1",
        post_id,
    )
    return (row["picked"], row["claimed"]) if row is not None else (None, None)


async def run(args: argparse.Namespace, workdir: Path) -> LagResult:
    from postwright.db.session import create_engine, create_sessionmaker

    db_name = c.new_database_name()
    database = c.database_url(args.admin_url, db_name)
    data_dir = workdir / "data"
    data_dir.mkdir()
    env = c.base_env(database, data_dir)
    processes = c.Processes(workdir)
    rng = random.Random(args.seed)
    samples: list[Sample] = []
    notes: list[str] = []
    await c.create_database(args.admin_url, db_name)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            fake = c.start_fake(processes, "X", env)
            admin = c.FakeAdmin(http, fake)
            await admin.wait_ready()
            await admin.set_knobs(latency_ms=0)
            seeded = await c.migrate_and_seed(database, data_dir, [c.AccountSpec("X", "lag", f"fake-lag-{db_name}")])
            worker_env = {
                **env,
                "POSTWRIGHT_PLATFORM_X_BASE_URL": fake.base_url,
                "POSTWRIGHT_X_CLIENT_ID": "lag",
                "POSTWRIGHT_LOG_LEVEL": "INFO",  # for "worker.start"
            }
            worker = processes.start("worker", c.worker_command(args.concurrency), worker_env)
            deadline = time.monotonic() + c.READY_TIMEOUT_S
            while "worker.start" not in processes.log_tail("worker", lines=200):
                processes.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not start")
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.settle)  # let it reach its idle state: listening, sweeping every second

            engine = create_engine(database, pool_size=2)
            sessionmaker = create_sessionmaker(engine)
            connection = await asyncpg.connect(database)
            try:
                for i in range(args.posts):
                    due = datetime.now(UTC) + timedelta(seconds=rng.uniform(args.min_ahead, args.max_ahead))
                    [post_id] = await c.create_posts(
                        sessionmaker, seeded.principal, seeded.account_ids, [f"lag {i} {db_name}"], due
                    )
                    sample = Sample(post_id, due)
                    samples.append(sample)
                    give_up = due + timedelta(seconds=PUBLISH_TIMEOUT_S)
                    while True:
                        row = await connection.fetchrow(
                            "SELECT status, updated_at FROM post_targets WHERE post_id = $1", post_id
                        )
                        assert row is not None
                        if row["status"] not in ("SCHEDULED", "PUBLISHING"):
                            sample.status = str(row["status"])
                            sample.recorded_lag_ms = (row["updated_at"] - due).total_seconds() * 1000
                            picked, claimed = await _pick_and_claim(connection, post_id)
                            if picked is not None:
                                sample.pick_lag_ms = (picked - due).total_seconds() * 1000
                            if claimed is not None:
                                sample.claim_lag_ms = (claimed - due).total_seconds() * 1000
                            break
                        if datetime.now(UTC) > give_up:
                            sample.status = str(row["status"])
                            notes.append(f"post {i} still {row['status']} {PUBLISH_TIMEOUT_S:g} s after its due time")
                            break
                        processes.check_alive()
                        await asyncio.sleep(0.01)
                    if not args.json:
                        shown = f"{sample.recorded_lag_ms:6.0f} ms" if sample.recorded_lag_ms is not None else "-"
                        print(f"  post {i + 1:3d}/{args.posts}: {sample.status} {shown}", file=sys.stderr, flush=True)
            finally:
                await connection.close()
                await engine.dispose()

            by_text = {}
            for record in await admin.requests("tweets.create"):
                text = str((record.get("body") or {}).get("text", ""))
                by_text.setdefault(text, c.parse_fake_time(record["at"]))
            for i, sample in enumerate(samples):
                arrived = by_text.get(f"lag {i} {db_name}")
                if arrived is not None:
                    sample.fake_lag_ms = (arrived - sample.due).total_seconds() * 1000
            del worker
    except Exception as exc:
        raise RuntimeError(f"{exc}{processes.logs()}") from exc
    finally:
        processes.stop_all()
        if args.logs:
            processes.save_logs(Path(args.logs))
        await c.drop_database(args.admin_url, db_name)

    fake_lags = sorted(s.fake_lag_ms for s in samples if s.fake_lag_ms is not None)
    recorded = sorted(s.recorded_lag_ms for s in samples if s.recorded_lag_ms is not None)
    picks = sorted(s.pick_lag_ms for s in samples if s.pick_lag_ms is not None)
    for i, s in enumerate(samples):
        if s.fake_lag_ms is not None and s.fake_lag_ms >= GOAL_P99_MS:
            pick = f"{s.pick_lag_ms:,.0f} ms" if s.pick_lag_ms is not None else "never"
            claim = f"{s.claim_lag_ms:,.0f} ms" if s.claim_lag_ms is not None else "never"
            notes.append(f"post {i + 1}: fake {s.fake_lag_ms:,.0f} ms late; job picked at {pick}, claimed at {claim}")
    published = sum(1 for s in samples if s.status == "PUBLISHED")
    p50, p99 = c.percentile(fake_lags, 50), c.percentile(fake_lags, 99)
    if len(fake_lags) < 100:
        notes.append(f"p99 of {len(fake_lags)} samples is their maximum")
    return LagResult(
        posts=args.posts,
        published=published,
        fake_p50_ms=round(p50, 1),
        fake_p99_ms=round(p99, 1),
        fake_min_ms=round(fake_lags[0], 1) if fake_lags else 0.0,
        fake_max_ms=round(fake_lags[-1], 1) if fake_lags else 0.0,
        recorded_p50_ms=round(c.percentile(recorded, 50), 1),
        recorded_p99_ms=round(c.percentile(recorded, 99), 1),
        pick_p50_ms=round(c.percentile(picks, 50), 1),
        pick_p99_ms=round(c.percentile(picks, 99), 1),
        samples_ms=[round(s.fake_lag_ms, 1) if s.fake_lag_ms is not None else -1.0 for s in samples],
        goals={
            "p50": bool(fake_lags) and p50 < GOAL_P50_MS,
            "p99": bool(fake_lags) and p99 < GOAL_P99_MS,
            "published": published == args.posts,
        },
        notes=notes,
    )


def render(result: LagResult) -> str:
    g = result.goals
    rows = [
        ("posts published", f"{result.published} / {result.posts}", "all", c.verdict(g["published"])),
        ("p50 (fake - due)", f"{result.fake_p50_ms:,.1f} ms", "< 100 ms", c.verdict(g["p50"])),
        ("p99 (fake - due)", f"{result.fake_p99_ms:,.1f} ms", "< 500 ms", c.verdict(g["p99"])),
        ("min / max (fake - due)", f"{result.fake_min_ms:,.1f} / {result.fake_max_ms:,.1f} ms", "", ""),
        ("p50 / p99 (job picked - due)", f"{result.pick_p50_ms:,.1f} / {result.pick_p99_ms:,.1f} ms", "", ""),
        ("p50 / p99 (recorded - due)", f"{result.recorded_p50_ms:,.1f} / {result.recorded_p99_ms:,.1f} ms", "", ""),
    ]
    title = f"lag: {result.posts} single posts on an idle worker, fake X without latency, cpus: {os.cpu_count()}"
    return c.render_table(title, rows) + "".join(f"\nnote: {n}" for n in result.notes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=30, help="posts, one after another (default 30)")
    parser.add_argument("--min-ahead", type=float, default=1.0, help="earliest due time, s after creation (1)")
    parser.add_argument("--max-ahead", type=float, default=2.0, help="latest due time, s after creation (2)")
    parser.add_argument("--concurrency", type=int, default=None, help="worker --concurrency (default: its own)")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds after the worker starts (2)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the due offsets")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("PW_BENCH_ADMIN_URL", c.DEFAULT_ADMIN_URL),
        help="PostgreSQL URL used to create and drop the benchmark database (loopback only)",
    )
    parser.add_argument("--logs", metavar="DIR", help="keep the logs of every process started (workers, fakes)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.posts < 1 or not 0 <= args.min_ahead <= args.max_ahead or args.settle < 0:
        parser.error("--posts must be >= 1 and 0 <= --min-ahead <= --max-ahead")
    c.require_loopback_url(args.admin_url)
    return args


def main(argv: list[str] | None = None) -> int:
    return c.run_main(run, render, parse_args(argv), prefix="pw-lag-")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
