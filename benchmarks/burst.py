"""Burst: N posts x 3 targets due in the same second, drained by worker processes against slow fakes.

Starts the fake platform(s) in their own process (fake X, answering every call after --latency-ms; with
--bluesky the third account is on a fake Bluesky in a second process), migrates a fresh database
`pw_bench_<random>` (dropped at the end), imports 3 accounts with `fake-` tokens and starts --workers
`postwright worker` processes. The posts are created fast: the first through `posts_service.create`, the
rest as column-for-column copies of what it wrote (targets SCHEDULED, one pgqueuer dispatch job per
post; `--seed service` creates every post through the service instead, a few ms a post). Once every
worker is up, all posts are moved to one due time a few seconds ahead, and the run waits until no
target is SCHEDULED or PUBLISHING (or --timeout seconds after the due time).

Prints the time to drain (due time -> last target recorded), target publishes per second, duplicates on
the fakes (same account + text created twice, from the fakes' receipt logs), and p50/p99 of (time the
fake received the create request - due time). Goals of the issue for 10,000 x 3 on 2 cores: drained
within 15 s (>= 2,000 publishes/s), 0 duplicates, every target PUBLISHED.

    python benchmarks/burst.py                                  # 10,000 posts, 1 worker, default concurrency
    python benchmarks/burst.py --posts 500 --workers 2 --concurrency 16 --json
    python benchmarks/burst.py --profile /tmp/burst-prof        # py-spy every worker during the burst

Needs PostgreSQL reachable at --admin-url (default postgresql://postgres@127.0.0.1:5432/postgres).
Exits 0 when every goal is met, 1 when one is missed, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c
import aiohttp
import asyncpg

FULL_SIZE_TARGETS = 30_000
GOAL_DRAIN_S = 15.0
GOAL_RATE = 2_000.0
POLL_S = 0.25


@dataclass
class Cpu:
    """CPU seconds used during the burst (due time -> drained), from /proc."""

    workers_s: float = 0.0
    fakes_s: float = 0.0
    postgres_s: float = 0.0  # every process named postgres (their exited children included)
    machine_busy_pct: float = 0.0  # of all cores, whole machine (PostgreSQL included)


@dataclass
class DbStats:
    """The benchmark database's counters during the burst (pg_stat_database)."""

    sessions: int = 0  # connections opened
    commits: int = 0
    rollbacks: int = 0


async def _db_counters(connection: asyncpg.Connection, db_name: str) -> DbStats:
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    row = await connection.fetchrow(
        "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1", db_name
    )
    assert row is not None
    return DbStats(int(row["sessions"]), int(row["xact_commit"]), int(row["xact_rollback"]))


@dataclass
class BurstResult:
    posts: int
    targets: int
    workers: int
    concurrency: int | None
    latency_ms: int
    platforms: list[str]
    seed_mode: str
    seed_s: float
    lead_s: float
    timeout_s: float
    drained: bool
    done: int  # targets no longer SCHEDULED / PUBLISHING
    drain_s: float | None  # due time -> last target recorded (None if not drained)
    publishes_per_s: float
    statuses: dict[str, int]
    fake_creates: int  # create requests the fakes received
    fake_posts: int  # posts the fakes hold
    duplicates: int  # (account, text) pairs created more than once
    lag_p50_ms: float
    lag_p99_ms: float
    lag_min_ms: float
    lag_max_ms: float
    first_pick_ms: float | None  # first pgqueuer pick of a dispatch job - due
    first_claim_ms: float | None  # first target claimed (attempt opened) - due
    cpu: Cpu
    db: DbStats
    goals: dict[str, bool | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v is not False for v in self.goals.values())


# --------------------------------------------------------------------------------------------------
# CPU accounting from /proc (Linux); zeros elsewhere.


def _proc_cpu_s(pid: int, *, children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_s() -> float:
    """CPU of the local PostgreSQL server: its processes, plus the exited backends its postmaster reaped."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        total += _proc_cpu_s(int(entry.name), children=True)
    return total


def _machine_ticks() -> tuple[int, int]:
    try:
        parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


@dataclass
class CpuSnapshot:
    workers: float
    fakes: float
    postgres: float
    busy: int
    total: int

    @classmethod
    def take(cls, workers: list[int], fakes: list[int]) -> CpuSnapshot:
        busy, total = _machine_ticks()
        return cls(
            sum(_proc_cpu_s(p) for p in workers), sum(_proc_cpu_s(p) for p in fakes), _postgres_cpu_s(), busy, total
        )

    def since(self, start: CpuSnapshot) -> Cpu:
        total = self.total - start.total
        return Cpu(
            workers_s=round(self.workers - start.workers, 2),
            fakes_s=round(self.fakes - start.fakes, 2),
            postgres_s=round(self.postgres - start.postgres, 2),
            machine_busy_pct=round(100 * (self.busy - start.busy) / total, 1) if total else 0.0,
        )


# --------------------------------------------------------------------------------------------------
# Profiling with py-spy (optional).


class Profiler:
    """`py-spy record --format raw` on each PID; stopped with SIGINT (py-spy then writes its file)."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, pid: int) -> None:
        self.outdir.mkdir(parents=True, exist_ok=True)
        out = self.outdir / f"{name}.txt"
        command = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--nonblocking"]
        command += ["-o", str(out)]
        log = (self.outdir / f"{name}.py-spy.log").open("wb")
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.running.append((name, process))

    def stop(self) -> None:
        for _, process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for _, process in self.running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def summary(self, top: int = 25) -> str:
        """Top frames by own and by inclusive samples, over every profiled process."""
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = 0
        for name, _ in self.running:
            path = self.outdir / f"{name}.txt"
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count_text = line.rpartition(" ")
                if not stack or not count_text.isdigit():
                    continue
                count = int(count_text)
                frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
                total += count
                if frames:
                    own[frames[-1]] += count
                for frame in set(frames):
                    inclusive[frame] += count
        if not total:
            return "no samples"
        lines = [f"{total} samples; top frames by own time:"]
        lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
        lines.append("postwright frames by inclusive time:")
        mine = [(f, n) for f, n in inclusive.most_common() if "postwright" in f][:top]
        lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in mine]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The run.


async def _wait_logged(processes: c.Processes, names: list[str], marker: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    pending = list(names)
    while pending:
        processes.check_alive()
        pending = [n for n in pending if marker not in processes.log_tail(n, lines=200)]
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(pending)} did not log {marker!r} within {limit_s:.0f} s")
            await asyncio.sleep(0.1)


async def _progress(connection: asyncpg.Connection, workspace_id: str) -> tuple[int, int]:
    row = await connection.fetchrow(
        "SELECT count(*) AS total, count(*) FILTER (WHERE status IN ('SCHEDULED', 'PUBLISHING')) AS pending "
        "FROM post_targets WHERE workspace_id = $1",
        workspace_id,
    )
    assert row is not None
    return int(row["total"]), int(row["pending"])


async def run(args: argparse.Namespace, workdir: Path) -> BurstResult:
    from postwright.db.session import create_engine, create_sessionmaker

    db_name = c.new_database_name()
    database = c.database_url(args.admin_url, db_name)
    data_dir = workdir / "data"
    data_dir.mkdir()
    env = c.base_env(database, data_dir)
    processes = c.Processes(workdir)
    profiler = Profiler(Path(args.profile)) if args.profile else None
    notes: list[str] = []
    await c.create_database(args.admin_url, db_name)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            fake_x = c.start_fake(processes, "X", env)
            fakes = [fake_x]
            if args.bluesky:
                fakes.append(c.start_fake(processes, "BLUESKY", env))
            admins = [c.FakeAdmin(http, f) for f in fakes]
            for admin in admins:
                await admin.wait_ready()
                await admin.set_knobs(latency_ms=args.latency_ms)

            specs = [c.AccountSpec("X", f"burst{i}", f"fake-burst-{db_name}-{i}") for i in (1, 2, 3)]
            if args.bluesky:
                specs[2] = c.AccountSpec("BLUESKY", "burst3.test", f"fake-burst-{db_name}", fakes[1].base_url)
            seeded = await c.migrate_and_seed(database, data_dir, specs)
            workspace_id = str(seeded.principal.workspace_id)

            worker_env = {
                **env,
                "POSTWRIGHT_PLATFORM_X_BASE_URL": fake_x.base_url,
                "POSTWRIGHT_X_CLIENT_ID": "burst",
                "POSTWRIGHT_LOG_LEVEL": "INFO",  # for "worker.start"; nothing logs per publish at INFO
            }
            names = [f"worker-{i}" for i in range(1, args.workers + 1)]
            workers = [processes.start(n, c.worker_command(args.concurrency), worker_env) for n in names]

            # Seed while the workers start: every post due in an hour, moved to the real due time below.
            engine = create_engine(database, pool_size=2)
            connection = await asyncpg.connect(database)
            try:
                texts = [f"burst {i} {db_name}" for i in range(args.posts)]
                placeholder = datetime.now(UTC) + timedelta(hours=1)
                started = time.perf_counter()
                sessionmaker = create_sessionmaker(engine)
                if args.seed == "service":
                    for start in range(0, len(texts), 500):
                        chunk = texts[start : start + 500]
                        await c.create_posts(sessionmaker, seeded.principal, seeded.account_ids, chunk, placeholder)
                else:
                    await c.clone_posts(
                        sessionmaker, connection, seeded.principal, seeded.account_ids, texts, placeholder
                    )
                seed_s = time.perf_counter() - started
                await _wait_logged(processes, names, "worker.start", c.READY_TIMEOUT_S)
                await asyncio.sleep(1.0)  # worker.start is logged just before pgqueuer starts listening

                due = datetime.now(UTC) + timedelta(seconds=args.lead)
                moved = await c.restamp_due(connection, workspace_id, due)
                if moved != args.posts:
                    raise RuntimeError(f"{moved} dispatch jobs queued for {args.posts} posts")
                total, pending = await _progress(connection, workspace_id)
                if not args.json:
                    print(
                        f"seeded {args.posts:,} posts ({total:,} targets) in {seed_s:.1f} s; due in {args.lead:g} s",
                        file=sys.stderr,
                        flush=True,
                    )

                pids_w = [w.pid for w in workers]
                pids_f = [f.process.pid for f in fakes]
                await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds() - 0.5))
                if profiler is not None:
                    for name, worker in zip(names, workers, strict=True):
                        profiler.start(name, worker.pid)
                    for fake in fakes:
                        profiler.start(f"fake-{fake.platform.lower()}", fake.process.pid)
                cpu_start = c_snapshot = CpuSnapshot.take(pids_w, pids_f)
                db_start = await _db_counters(connection, db_name)
                deadline = due + timedelta(seconds=args.timeout)
                last_report = 0.0
                while pending and datetime.now(UTC) < deadline:
                    await asyncio.sleep(POLL_S)
                    processes.check_alive()
                    total, pending = await _progress(connection, workspace_id)
                    c_snapshot = CpuSnapshot.take(pids_w, pids_f)
                    now = time.monotonic()
                    if not args.json and now - last_report >= 2.0 and datetime.now(UTC) > due:
                        last_report = now
                        elapsed = (datetime.now(UTC) - due).total_seconds()
                        print(f"  +{elapsed:5.1f} s: {total - pending:,}/{total:,} done", file=sys.stderr, flush=True)
                cpu = c_snapshot.since(cpu_start)
                await asyncio.sleep(0.6)  # backends report their counters at most every 0.5 s when idle
                db_end = await _db_counters(connection, db_name)
                db = DbStats(
                    db_end.sessions - db_start.sessions,
                    db_end.commits - db_start.commits,
                    db_end.rollbacks - db_start.rollbacks,
                )
                # Stop the workers before reading the fakes' logs, so both logs and rows are final.
                for worker in workers:
                    processes.stop(worker)
                if profiler is not None:
                    profiler.stop()
                drained = pending == 0
                if not drained:
                    notes.append(f"{pending:,} targets still pending {args.timeout:g} s after the due time")

                rows = await connection.fetch(
                    "SELECT status, coalesce(error_code, '') AS code, count(*) AS n, max(updated_at) AS last "
                    "FROM post_targets WHERE workspace_id = $1 GROUP BY 1, 2",
                    workspace_id,
                )
                first_pick = await connection.fetchval(
                    f"SELECT min(created) FROM {c.QUEUE_TABLE}_log WHERE status = 'picked'"
                )
                first_claim = await connection.fetchval("SELECT min(started_at) FROM publish_attempts")
            finally:
                await connection.close()
                await engine.dispose()

            statuses = {f"{r['status']}{'/' + r['code'] if r['code'] else ''}": int(r["n"]) for r in rows}
            finished = [r["last"] for r in rows if r["status"] not in ("SCHEDULED", "PUBLISHING") and r["last"]]
            drain_s = (max(finished) - due).total_seconds() if drained and finished else None
            published = sum(int(r["n"]) for r in rows if r["status"] == "PUBLISHED")
            elapsed_s = drain_s if drain_s is not None else float(args.timeout)
            rate = published / elapsed_s if elapsed_s > 0 else 0.0

            # The fakes' receipt logs: every create request (its arrival time) and every post they hold.
            lags: list[float] = []
            creates = 0
            held = 0
            duplicates = 0
            for admin in admins:
                for op in c.CREATE_OPS[admin.fake.platform]:
                    for record in await admin.requests(op):
                        creates += 1
                        lags.append((c.parse_fake_time(record["at"]) - due).total_seconds() * 1000)
                posts = await admin.posts()
                held += len(posts)
                counts = Counter((p["account"], c.post_text(p)) for p in posts)
                duplicates += sum(n - 1 for n in counts.values() if n > 1)
            lags.sort()
            if creates != published:
                notes.append(f"the fakes got {creates:,} create requests for {published:,} published targets")
    except Exception as exc:
        raise RuntimeError(f"{exc}{processes.logs()}") from exc
    finally:
        if profiler is not None:
            profiler.stop()
        processes.stop_all()
        if args.logs:
            processes.save_logs(Path(args.logs))
        await c.drop_database(args.admin_url, db_name)

    targets = args.posts * 3
    full_size = targets >= FULL_SIZE_TARGETS
    goals: dict[str, bool | None] = {
        "drain": (drain_s is not None and drain_s <= GOAL_DRAIN_S) if full_size else (drain_s is not None),
        "rate": rate >= GOAL_RATE if full_size else None,
        "duplicates": duplicates == 0,
        "published": published == targets,
    }
    if not full_size:
        notes.append(f"small run ({targets:,} targets): the 15 s / 2,000 per s goals apply to 30,000 targets")
    if profiler is not None:
        summary = profiler.summary()
        (Path(args.profile) / "summary.txt").write_text(summary + "\n")
        notes.append(f"py-spy profiles and summary.txt in {args.profile}")
    return BurstResult(
        posts=args.posts,
        targets=targets,
        workers=args.workers,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
        platforms=[s.platform for s in specs],
        seed_mode=args.seed,
        seed_s=round(seed_s, 2),
        lead_s=args.lead,
        timeout_s=args.timeout,
        drained=drained,
        done=total - pending,
        drain_s=round(drain_s, 3) if drain_s is not None else None,
        publishes_per_s=round(rate, 1),
        statuses=statuses,
        fake_creates=creates,
        fake_posts=held,
        duplicates=duplicates,
        lag_p50_ms=round(c.percentile(lags, 50), 1),
        lag_p99_ms=round(c.percentile(lags, 99), 1),
        lag_min_ms=round(lags[0], 1) if lags else 0.0,
        lag_max_ms=round(lags[-1], 1) if lags else 0.0,
        first_pick_ms=round((first_pick - due).total_seconds() * 1000, 1) if first_pick else None,
        first_claim_ms=round((first_claim - due).total_seconds() * 1000, 1) if first_claim else None,
        cpu=cpu,
        db=db,
        goals=goals,
        notes=notes,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def render(result: BurstResult) -> str:
    g = result.goals
    full = result.targets >= FULL_SIZE_TARGETS
    drain = f"{result.drain_s:.2f} s" if result.drain_s is not None else f"not drained ({result.done:,} done)"
    rows = [
        ("targets", f"{result.posts:,} x 3 = {result.targets:,}", "", ""),
        ("workers x concurrency", f"{result.workers} x {result.concurrency or 'default'}", "", ""),
        ("accounts", " + ".join(result.platforms), "", ""),
        ("fake latency", f"{result.latency_ms} ms", "", ""),
        ("seed", f"{result.seed_s:.1f} s ({result.seed_mode})", "", ""),
        ("time to drain", drain, "<= 15 s" if full else f"< {result.timeout_s:g} s", c.verdict(g.get("drain"))),
        ("publishes / s", f"{result.publishes_per_s:,.0f}", ">= 2,000", c.verdict(g.get("rate"))),
        ("duplicates", str(result.duplicates), "0", c.verdict(g.get("duplicates"))),
        (
            "statuses",
            ", ".join(f"{k} {v:,}" for k, v in sorted(result.statuses.items())),
            "all PUBLISHED",
            c.verdict(g.get("published")),
        ),
        ("fake creates / posts", f"{result.fake_creates:,} / {result.fake_posts:,}", "", ""),
        ("lag p50 (fake - due)", f"{result.lag_p50_ms:,.0f} ms", "", ""),
        ("lag p99 (fake - due)", f"{result.lag_p99_ms:,.0f} ms", "", ""),
        ("lag min / max", f"{result.lag_min_ms:,.0f} / {result.lag_max_ms:,.0f} ms", "", ""),
        ("first job pick / claim", f"{_ms(result.first_pick_ms)} / {_ms(result.first_claim_ms)} after due", "", ""),
        (
            "cpu s: workers / fakes / pg",
            f"{result.cpu.workers_s:.1f} / {result.cpu.fakes_s:.1f} / {result.cpu.postgres_s:.1f}",
            "",
            "",
        ),
        ("machine busy (all cores)", f"{result.cpu.machine_busy_pct:.0f} %", "", ""),
        (
            "db commits / sessions opened",
            f"{result.db.commits:,} ({result.db.commits / max(result.done, 1):.2f}/target) / {result.db.sessions:,}",
            "",
            "",
        ),
    ]
    title = f"burst: {result.targets:,} targets due at once, cpus: {os.cpu_count()}"
    out = c.render_table(title, rows)
    return out + "".join(f"\nnote: {n}" for n in result.notes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000, help="posts, 3 targets each (default 10,000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=None, help="worker --concurrency (default: its own)")
    parser.add_argument("--latency-ms", type=int, default=50, help="fake answer latency (default 50)")
    parser.add_argument("--bluesky", action="store_true", help="2 X accounts + 1 Bluesky (own fake process)")
    parser.add_argument("--seed", choices=("bulk", "service"), default="bulk", help="how posts are created")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds from fixing the due time to it (3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up this long after the due time")
    parser.add_argument("--profile", metavar="DIR", help="py-spy (raw stacks) of every worker and fake into DIR")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("PW_BENCH_ADMIN_URL", c.DEFAULT_ADMIN_URL),
        help="PostgreSQL URL used to create and drop the benchmark database (loopback only)",
    )
    parser.add_argument("--logs", metavar="DIR", help="keep the logs of every process started (workers, fakes)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.posts < 1 or args.workers < 1 or args.latency_ms < 0 or args.timeout <= 0 or args.lead < 1:
        parser.error("--posts and --workers must be >= 1, --latency-ms >= 0, --timeout > 0, --lead >= 1")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    c.require_loopback_url(args.admin_url)
    return args


def main(argv: list[str] | None = None) -> int:
    return c.run_main(run, render, parse_args(argv), prefix="pw-burst-")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
