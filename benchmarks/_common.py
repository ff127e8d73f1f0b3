"""Shared plumbing of the publishing benchmarks (`burst.py`, `lag.py`).

Everything here talks to 127.0.0.1 only: the PostgreSQL server named by the admin URL (which must be a
loopback URL), fake platform servers started as subprocesses on free loopback ports, and worker
subprocesses pointed at them. Every process is started through `Processes`, which stops each one by
its PID; every database is created under a fresh `pw_bench_<random>` name and dropped again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

HOST = "127.0.0.1"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
FAKE_FACTORIES = {
    "X": "postwright.testing.fakes.x:create_x_app",
    "BLUESKY": "postwright.testing.fakes.bluesky:create_bluesky_app",
}


# --------------------------------------------------------------------------------------------------
# Small helpers.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def render_table(title: str, rows: Iterable[tuple[str, str, str, str]]) -> str:
    """A plain table of (metric, value, goal, result) rows under a title line."""
    header = ("metric", "value", "goal", "result")
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [title]
    for i, line in enumerate(lines):
        cells = [c.rjust(w) if j == 1 else c.ljust(w) for j, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def parse_fake_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------------
# The database.


def require_loopback_url(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise SystemExit(f"refusing a non-loopback PostgreSQL host {host!r}: the benchmarks stay on 127.0.0.1")


def database_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


def new_database_name() -> str:
    return f"pw_bench_{secrets.token_hex(4)}"


async def _admin_execute(admin_url: str, sql: str) -> None:
    connection = await asyncpg.connect(admin_url, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def create_database(admin_url: str, name: str) -> None:
    await _admin_execute(admin_url, f'CREATE DATABASE "{name}"')


async def drop_database(admin_url: str, name: str) -> None:
    await _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------------------------------
# Subprocesses.


class Processes:
    """Subprocesses started here; `stop_all` terminates each by PID, then kills it after a timeout."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("wb")
        try:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()  # the child holds its own descriptor
        self.started.append((name, process))
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Terminate one started process by PID (kill after a timeout); stop_all skips it afterwards."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)

    def check_alive(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                raise RuntimeError(f"{name} (pid {process.pid}) exited with code {process.returncode}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def save_logs(self, dest: Path) -> None:
        """Copy every process log (`<name>.log`) into `dest`."""
        dest.mkdir(parents=True, exist_ok=True)
        for name, _ in self.started:
            path = self.logdir / f"{name}.log"
            if path.exists():
                (dest / path.name).write_bytes(path.read_bytes())

    def logs(self) -> str:
        return "".join(f"\n--- {name} log (tail) ---\n{self.log_tail(name)}" for name, _ in self.started)

    def stop_all(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.terminate()
        for _, process in self.started:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


def base_env(database: str, data_dir: Path) -> dict[str, str]:
    """The environment of every subprocess: no inherited POSTWRIGHT_* setting leaks into a run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWRIGHT_") and k != "DATABASE_URL"}
    env.update({"DATABASE_URL": database, "POSTWRIGHT_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    return env


def worker_command(concurrency: int | None) -> list[str]:
    command = [sys.executable, "-m", "postwright", "worker"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return command


# --------------------------------------------------------------------------------------------------
# Fake platforms, each in its own process, driven through their `/_fake` admin API.


@dataclass
class FakeServer:
    platform: str
    base_url: str
    process: subprocess.Popen[bytes]


def start_fake(processes: Processes, platform: str, env: dict[str, str], *, name: str | None = None) -> FakeServer:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        FAKE_FACTORIES[platform],
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-proxy-headers",  # loopback only; uvicorn's proxy middleware is per-request CPU for nothing
        "--lifespan",
        "off",
        "--timeout-graceful-shutdown",
        "1",
    ]
    process = processes.start(name or f"fake-{platform.lower()}", command, env)
    return FakeServer(platform, f"http://{HOST}:{port}", process)


class FakeAdmin:
    """The `/_fake/...` admin API of one fake server."""

    def __init__(self, session: aiohttp.ClientSession, fake: FakeServer) -> None:
        self.session = session
        self.fake = fake

    async def wait_ready(self, limit_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + limit_s
        while True:
            if self.fake.process.poll() is not None:
                raise RuntimeError(f"fake {self.fake.platform} exited with code {self.fake.process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(f"{self.fake.base_url}/_fake/health") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake {self.fake.platform} not ready after {limit_s:.0f} s")
            await asyncio.sleep(0.1)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.fake.base_url}/_fake/{path}"
        timeout = aiohttp.ClientTimeout(total=120)
        async with self.session.request(method, url, json=body, timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
            return await response.json()

    async def set_knobs(self, **knobs: Any) -> None:
        await self._call("POST", "knobs", knobs)

    async def posts(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "posts?include_deleted=1"))["posts"])

    async def requests(self, op: str | None = None) -> list[dict[str, Any]]:
        return list((await self._call("GET", f"requests?op={op}" if op else "requests"))["requests"])


# The operations of each fake that create a post.
CREATE_OPS = {"X": ("tweets.create",), "BLUESKY": ("com.atproto.repo.createRecord", "com.atproto.repo.putRecord")}


def post_text(post: dict[str, Any]) -> str:
    """The text a client sent for a post the fake holds (X stores a rewritten copy in `text`)."""
    body = post.get("body") or {}
    return str(body.get("text", post.get("text", "")))


# --------------------------------------------------------------------------------------------------
# Seeding through postwright's own services (so rows are exactly what the API would write).


@dataclass
class AccountSpec:
    platform: str  # "X" or "BLUESKY"
    handle: str
    token: str  # X access token, or Bluesky app password
    service_url: str | None = None  # Bluesky: the fake's base URL


@dataclass
class Seeded:
    principal: Any  # postwright.workspaces.auth.Principal
    account_ids: list[str]


async def migrate_and_seed(database: str, data_dir: Path, accounts: list[AccountSpec]) -> Seeded:
    """Migrate the fresh database, bootstrap a workspace and import the accounts (tokens `fake-...`)."""
    from postwright.accounts.schemas import CredentialsIn, SocialAccountCreate
    from postwright.accounts.service import accounts_service
    from postwright.accounts.verification import bluesky_verifier
    from postwright.db.migrate import migrate
    from postwright.db.session import create_engine, create_sessionmaker, unit_of_work
    from postwright.kit.crypto import TokenCipher, load_or_create_keys
    from postwright.workspaces.service import workspaces_service

    engine = create_engine(database, pool_size=2)
    try:
        await migrate(engine)
        sessionmaker = create_sessionmaker(engine)
        async with unit_of_work(sessionmaker) as session:
            made = await workspaces_service.bootstrap(session, workspace_name="Bench", email="bench@example.com")
            raw_key = made.key.raw_key
        async with unit_of_work(sessionmaker) as session:
            principal = await workspaces_service.authenticate(session, raw_key=raw_key, workspace_hint=None)
        cipher = TokenCipher(load_or_create_keys(None, data_dir))
        account_ids: list[str] = []
        async with aiohttp.ClientSession() as http:

            async def provide() -> aiohttp.ClientSession:
                return http

            accounts_service.verifiers["BLUESKY"] = bluesky_verifier(provide, 10.0)
            for spec in accounts:
                if spec.platform == "BLUESKY":
                    creds = CredentialsIn(appPassword=spec.token, serviceUrl=spec.service_url)
                else:
                    creds = CredentialsIn(accessToken=spec.token)
                data = SocialAccountCreate(platform=spec.platform, handle=spec.handle, credentials=creds)
                async with unit_of_work(sessionmaker) as session:
                    account, _ = await accounts_service.import_account(session, principal, data, cipher)
                    account_ids.append(account.id)
        return Seeded(principal, account_ids)
    finally:
        await engine.dispose()


def iso_z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def create_posts(
    sessionmaker: Any, principal: Any, account_ids: list[str], texts: Sequence[str], due: datetime
) -> list[str]:
    """Create scheduled posts through `posts_service.create`, all in one transaction (one per call).

    Each post gets one target per account, SCHEDULED at `due`, and one pgqueuer dispatch job, exactly as
    `POST /posts` would write them (the same service code), minus the HTTP round trips.
    """
    from postwright.db.session import unit_of_work
    from postwright.posts.schemas import CreatePostFlat, PostInput
    from postwright.posts.service import posts_service

    when = iso_z(due)
    platforms = [{"accountId": a} for a in account_ids]
    ids: list[str] = []
    async with unit_of_work(sessionmaker) as session:
        for text in texts:
            body = CreatePostFlat.model_validate({"content": text, "scheduledFor": when, "platforms": platforms})
            post = await posts_service.create(session, principal, PostInput.from_body(body))
            ids.append(post.id)
    return ids


QUEUE_TABLE = "pgqueuer"


async def restamp_due(connection: asyncpg.Connection, workspace_id: str, due: datetime) -> int:
    """Move every scheduled post of the workspace (targets, posts and their queued dispatch jobs) to `due`.

    The result is what creating the posts with `due` in the first place would have written; it lets a
    slow seed finish before the due time is fixed. pgqueuer's change trigger is statement-level and only
    notifies row changes it can see (INSERT, DELETE), so the notification an insert would have sent is
    sent here by hand: without it a worker sleeping out its dequeue timeout (5 s) would miss the due time.
    Returns the number of jobs moved.
    """
    from pgqueuer.domain.settings import DBSettings

    from postwright.publishing.queue import DISPATCH_POST

    settings = DBSettings()
    async with connection.transaction():
        await connection.execute(
            "UPDATE post_targets SET scheduled_for = $2 WHERE workspace_id = $1 AND status = 'SCHEDULED'",
            workspace_id,
            due,
        )
        await connection.execute(
            "UPDATE posts SET scheduled_at = $2 WHERE workspace_id = $1 AND status = 'SCHEDULED'", workspace_id, due
        )
        moved = await connection.execute(
            f"UPDATE {settings.queue_table} SET execute_after = $2 WHERE entrypoint = $1 AND status = 'queued'",
            DISPATCH_POST,
            due,
        )
        await connection.execute(
            "SELECT pg_notify($1::text, json_build_object('channel', $1::text, 'operation', 'update', 'sent_at', NOW(),"
            " 'table', $2::text, 'type', 'table_changed_event')::text)",
            settings.channel,
            settings.queue_table,
        )
    return int(moved.split()[-1])


async def clone_posts(
    sessionmaker: Any,
    connection: asyncpg.Connection,
    principal: Any,
    account_ids: list[str],
    texts: Sequence[str],
    due: datetime,
    *,
    batch: int = 2000,
) -> list[str]:
    """Create `len(texts)` scheduled posts fast: the first through `posts_service.create`, the rest as copies.

    Every row the service wrote for the template post (the post, its targets, its audit event and its
    pgqueuer dispatch job) is copied column for column; only ids, the text and the creation times change,
    and jobs are queued with pgqueuer's own batch `enqueue`. Refuses to run if the service wrote anything
    else for the template (media links, other tables) that this copy would miss.
    """
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    from postwright.kit.clock import utcnow
    from postwright.kit.ids import new_id
    from postwright.publishing.queue import workflow_id_for

    before = await _row_counts(connection)
    [template_id] = await create_posts(sessionmaker, principal, account_ids, texts[:1], due)
    after = await _row_counts(connection)
    changed = {t: after.get(t, 0) - before.get(t, 0) for t in after if after.get(t, 0) != before.get(t, 0)}
    expected = {"posts": 1, "post_targets": len(account_ids), "audit_events": 1, QUEUE_TABLE: 1, "pgqueuer_log": 1}
    if changed != expected:
        raise RuntimeError(f"creating one post wrote {changed}, the bulk copy knows how to copy {expected}")

    post = dict(await connection.fetchrow("SELECT * FROM posts WHERE id = $1", template_id))
    rows = await connection.fetch("SELECT * FROM post_targets WHERE post_id = $1 ORDER BY position", template_id)
    targets = [dict(r) for r in rows]
    audit = dict(await connection.fetchrow("SELECT * FROM audit_events WHERE subject_id = $1", template_id))
    job_id = int(str(post["workflow_id"]).removeprefix("wf_"))
    job = await connection.fetchrow(f"SELECT * FROM {QUEUE_TABLE} WHERE id = $1", job_id)
    payload = json.loads(job["payload"])
    if payload.get("postId") != template_id or any(t["job_id"] != job_id for t in targets):
        raise RuntimeError(f"unexpected template job {dict(job)} for post {template_id}")

    queries = Queries(AsyncpgDriver(connection))
    ids = [template_id]
    rest = list(texts[1:])
    for start in range(0, len(rest), batch):
        chunk = rest[start : start + batch]
        post_ids = [new_id("post") for _ in chunk]
        async with connection.transaction():
            delay = max(due - utcnow(), timedelta(0))
            job_ids = await queries.enqueue(
                [str(job["entrypoint"])] * len(chunk),
                [json.dumps({**payload, "postId": p}).encode() for p in post_ids],
                [int(job["priority"])] * len(chunk),
                [delay] * len(chunk),
            )
            now = utcnow()
            post_rows, target_rows, audit_rows = [], [], []
            for post_id, text, new_job in zip(post_ids, chunk, job_ids, strict=True):
                post_rows.append(
                    {
                        **post,
                        "id": post_id,
                        "caption": text,
                        "workflow_id": workflow_id_for(int(new_job)),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                for target in targets:
                    target_rows.append(
                        {
                            **target,
                            "id": new_id("tgt"),
                            "post_id": post_id,
                            "job_id": int(new_job),
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                audit_rows.append({**audit, "id": new_id("aud"), "subject_id": post_id, "created_at": now})
            for table, rows in (("posts", post_rows), ("post_targets", target_rows), ("audit_events", audit_rows)):
                columns = list(rows[0])
                await connection.copy_records_to_table(
                    table, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
                )
        ids.extend(post_ids)
    return ids


async def _row_counts(connection: asyncpg.Connection) -> dict[str, int]:
    tables = await connection.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    counts: dict[str, int] = {}
    for row in tables:
        name = str(row["table_name"])
        counts[name] = int(await connection.fetchval(f'SELECT count(*) FROM "{name}"'))
    return counts


def run_main(
    run: Callable[[argparse.Namespace, Path], Awaitable[Any]],
    render: Callable[[Any], str],
    args: argparse.Namespace,
    *,
    prefix: str,
) -> int:
    """The shared `main` of the benchmarks: run in a temp dir, print a table or JSON, exit 0/1/2."""
    # SIGTERM raises SystemExit so that `run` still stops its subprocesses and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            result = asyncio.run(run(args, Path(tmp)))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**asdict(result), "passed": result.passed, "cpus": os.cpu_count()}, indent=2))
    else:
        print(render(result))
    return 0 if result.passed else 1
