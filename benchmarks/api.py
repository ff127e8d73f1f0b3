"""Throughput and latency of the API next to a bare FastAPI echo app, on loopback.

Starts `postwright serve --no-worker` (one process, on a fresh database `pw_bench_<random>` that is
dropped at the end) and a bare FastAPI app whose `POST /echo` returns the JSON body it got, run with
uvicorn exactly the way postwright runs it. Both are loaded by the same client with the same number
of connections: `wrk` when it is on PATH, else a closed-loop aiohttp load generator in this process
(the servers are subprocesses). Prints rps and p50/p99 for echo, `POST /api/v1/posts` with 3 targets
and `GET /api/v1/posts/{id}`, with the ratio of each to echo and the goals of the issue:
POST >= 25 % of echo with p99 <= 25 ms, GET >= 50 % of echo.

    python benchmarks/api.py                      # 32 connections, 10 s per scenario
    python benchmarks/api.py --duration 5 --json  # JSON on stdout
    python benchmarks/api.py --client aiohttp     # force the Python load generator

Needs PostgreSQL reachable at --admin-url (default postgresql://postgres@127.0.0.1:5432/postgres).
Exits 0 when every goal is met, 1 when one is missed, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import _common as c
from fastapi import Body, FastAPI

HOST = "127.0.0.1"
API_PREFIX = "/api/v1"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUEST_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
ECHO_BODY = {"content": "benchmark post", "platforms": [{"accountId": "acc_1"}], "n": 1}


# --------------------------------------------------------------------------------------------------
# The echo app: run as a subprocess of this file (`--serve-echo PORT`).


def serve_echo(port: int) -> None:
    """A bare FastAPI JSON echo app, served the way `postwright.server.run_server` serves the API:
    the same uvicorn.Config arguments, and `Server.serve()` on the loop `postwright.cli.run_async` picks
    (uvloop when installed). Keep the two in step."""
    import uvicorn

    app = FastAPI()

    @app.post("/echo")
    async def echo(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return body

    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="on", access_log=False)
    from postwright.cli import run_async

    run_async(uvicorn.Server(config).serve())


# --------------------------------------------------------------------------------------------------
# Scenarios and results.


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]
    expected_status: int
    min_ratio: float | None = None  # of echo rps
    max_p99_ms: float | None = None

    @property
    def goal(self) -> str:
        parts = []
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:.0%} echo")
        if self.max_p99_ms is not None:
            parts.append(f"p99 <= {self.max_p99_ms:g} ms")
        return ", ".join(parts) or "-"


@dataclass
class LoadResult:
    requests: int  # successful (expected status) in the measured window
    errors: int  # wrong status, connection errors and timeouts in the measured window
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Row:
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    ratio_to_echo: float | None
    goal: str
    passed: bool | None  # None: no goal
    notes: list[str] = field(default_factory=list)


def evaluate(scenario: Scenario, result: LoadResult, echo_rps: float | None) -> Row:
    ratio = result.rps / echo_rps if echo_rps else None
    notes: list[str] = []
    has_goal = scenario.min_ratio is not None or scenario.max_p99_ms is not None
    passed: bool | None = None
    if has_goal:
        passed = True
        if scenario.min_ratio is not None and (ratio is None or ratio < scenario.min_ratio):
            passed = False
            notes.append("rps below goal")
        if scenario.max_p99_ms is not None and result.p99_ms > scenario.max_p99_ms:
            passed = False
            notes.append("p99 above goal")
    if result.errors:
        passed = False
        notes.append(f"{result.errors} errors")
    if result.requests == 0:
        passed = False
        notes.append("no successful request")
    return Row(
        scenario=scenario.name,
        rps=round(result.rps, 1),
        p50_ms=round(result.p50_ms, 2),
        p99_ms=round(result.p99_ms, 2),
        requests=result.requests,
        errors=result.errors,
        ratio_to_echo=round(ratio, 3) if ratio is not None else None,
        goal=scenario.goal,
        passed=passed,
        notes=notes,
    )


async def aiohttp_load(
    scenario: Scenario, *, connections: int, warmup: float, duration: float, max_requests: int
) -> LoadResult:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    latencies: list[float] = []
    errors = 0
    last_end = 0.0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, last_end
        while len(latencies) + errors < max_requests:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                async with session.request(
                    scenario.method, scenario.url, data=scenario.body, headers=scenario.headers
                ) as response:
                    await response.read()
                    ok = response.status == scenario.expected_status
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            t1 = time.perf_counter()
            if t0 >= measure_from:
                last_end = max(last_end, t1)
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Every request ends within REQUEST_TIMEOUT_S, so this bound is only a safety net.
        async with asyncio.timeout(warmup + duration + 2 * REQUEST_TIMEOUT_S):
            await asyncio.gather(*(worker(session) for _ in range(connections)))

    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        errors=errors,
        seconds=max(last_end - measure_from, 0.0),
        p50_ms=c.percentile(latencies, 50) * 1000,
        p99_ms=c.percentile(latencies, 99) * 1000,
    )


def run_aiohttp_load(
    scenario: Scenario, *, connections: int, warmup: float, duration: float, max_requests: int
) -> LoadResult:
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop  # the client's CPU is the benchmark's noise: spend as little as possible

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(
            aiohttp_load(scenario, connections=connections, warmup=warmup, duration=duration, max_requests=max_requests)
        )


WRK_SCRIPT = """\
wrk.method = {method}
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("PWBENCH %d %d %d %d %d %d %d %.1f %.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    level = "="
    while f"]{level}]" in value:
        level += "="
    return f"[{level}[{value}]{level}]"


def run_wrk(
    wrk: str, scenario: Scenario, *, connections: int, warmup: float, duration: float, workdir: Path
) -> LoadResult:
    headers = "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in scenario.headers.items())
    script = workdir / f"wrk-{scenario.name.replace(' ', '_').replace('/', '_')}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            method=_lua_string(scenario.method),
            body=_lua_string(scenario.body.decode()) if scenario.body else "nil",
            headers=headers,
        )
    )
    # wrk counts statuses >= 400 as errors; the exact 2xx of each scenario is checked once while seeding
    # (a Lua `response` callback would check every one, at a cost to wrk). One thread leaves the other
    # core to the server; it is far from being wrk's limit.
    threads = 1

    def once(seconds: float) -> subprocess.CompletedProcess[str]:
        command = [
            wrk,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            f"{round(REQUEST_TIMEOUT_S)}s",
            "-s",
            str(script),
            scenario.url,
        ]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 2 * REQUEST_TIMEOUT_S, check=True
        )

    if warmup > 0:
        once(warmup)
    done = once(duration)
    line = next((x for x in done.stdout.splitlines() if x.startswith("PWBENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}{done.stderr}")
    requests, micros, *errs, p50_us, p99_us = line.split()[1:]
    error_count = sum(int(e) for e in errs)
    return LoadResult(
        requests=max(int(requests) - int(errs[3]), 0),  # errs[3]: responses with status >= 400
        errors=error_count,
        seconds=int(micros) / 1e6,
        p50_ms=float(p50_us) / 1000,
        p99_ms=float(p99_us) / 1000,
    )


# --------------------------------------------------------------------------------------------------
# Processes, database and setup.


def create_database(admin_url: str, name: str) -> None:
    asyncio.run(c.create_database(admin_url, name))


def drop_database(admin_url: str, name: str) -> None:
    asyncio.run(c.drop_database(admin_url, name))


async def _wait_ready(urls: dict[str, str], processes: dict[str, subprocess.Popen[bytes]]) -> None:
    import aiohttp

    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = dict(urls)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while pending:
            for name, url in list(pending.items()):
                if processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with code {processes[name].returncode} before it was ready")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.request("GET" if name == "api" else "POST", url, json={}) as response:
                        if response.status == 200:
                            del pending[name]
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(pending)}")
                await asyncio.sleep(0.2)


def wait_ready(urls: dict[str, str], processes: dict[str, subprocess.Popen[bytes]]) -> None:
    asyncio.run(_wait_ready(urls, processes))


def bootstrap(env: dict[str, str]) -> str:
    command = [
        sys.executable,
        "-m",
        "postwright",
        "bootstrap",
        "--workspace",
        "Bench",
        "--email",
        "bench@example.com",
        "--json",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"postwright bootstrap failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return str(json.loads(done.stdout.strip().splitlines()[-1])["apiKey"])


def post_body(account_ids: list[str]) -> dict[str, Any]:
    when = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    return {
        "content": "benchmark post",
        "platforms": [{"accountId": a} for a in account_ids],
        "scheduledFor": when.isoformat().replace("+00:00", "Z"),
    }


async def _seed(api: str, headers: dict[str, str]) -> tuple[list[str], str]:
    """Import 3 accounts and create one post to read back; returns (account ids, post id)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
        account_ids: list[str] = []
        for n in (1, 2, 3):
            body = {"platform": "X", "handle": f"bench{n}", "credentials": {"accessToken": f"fake-{n}"}}
            async with session.post(f"{api}/social-accounts", json=body, headers=headers) as response:
                if response.status != 201:
                    raise RuntimeError(f"POST /social-accounts: {response.status} {await response.text()}")
                account_ids.append(str((await response.json())["id"]))
        async with session.post(f"{api}/posts", json=post_body(account_ids), headers=headers) as response:
            if response.status != 201:
                raise RuntimeError(f"POST /posts: {response.status} {await response.text()}")
            created = await response.json()
        if len(created.get("targets", [])) not in (0, 3):
            raise RuntimeError(f"POST /posts made {len(created['targets'])} targets, expected 3")
        return account_ids, str(created["id"])


def seed(api: str, headers: dict[str, str]) -> tuple[list[str], str]:
    return asyncio.run(_seed(api, headers))


# --------------------------------------------------------------------------------------------------
# Output.


def render_table(rows: list[Row], *, client: str, connections: int, duration: float) -> str:
    header = ("scenario", "rps", "p50 ms", "p99 ms", "errors", "vs echo", "goal", "result")
    lines = [header]
    for row in rows:
        result = "-" if row.passed is None else ("PASS" if row.passed else "FAIL")
        if row.notes and row.passed is not None and not row.passed:
            result += f" ({'; '.join(row.notes)})"
        lines.append(
            (
                row.scenario,
                f"{row.rps:,.0f}",
                f"{row.p50_ms:.2f}",
                f"{row.p99_ms:.2f}",
                str(row.errors),
                "-" if row.ratio_to_echo is None else f"{row.ratio_to_echo:.1%}",
                row.goal,
                result,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2, 3, 4, 5}
    out = [f"client: {client}, {connections} connections, {duration:g} s per scenario, cpus: {os.cpu_count()}"]
    for i, line in enumerate(lines):
        out.append(
            "  ".join(
                c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Main.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="cap per scenario (aiohttp client)")
    parser.add_argument("--client", choices=("auto", "wrk", "aiohttp"), default="auto", help="wrk if on PATH (auto)")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("PW_BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL URL used to create and drop the benchmark database",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0 or args.warmup < 0 or args.max_requests < 1:
        parser.error("--connections and --max-requests must be >= 1, --duration > 0, --warmup >= 0")
    return args


def run(args: argparse.Namespace) -> tuple[list[Row], str]:
    wrk = shutil.which("wrk") if args.client in ("auto", "wrk") else None
    if args.client == "wrk" and wrk is None:
        raise RuntimeError("--client wrk: wrk is not on PATH (apt-get install wrk)")
    client = f"wrk ({wrk})" if wrk else "aiohttp (this process)"
    db_name = f"pw_bench_{secrets.token_hex(4)}"

    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        data_dir.mkdir()
        env = {
            **os.environ,
            "DATABASE_URL": c.database_url(args.admin_url, db_name),
            "POSTWRIGHT_DATA_DIR": str(data_dir),
        }
        processes = c.Processes(workdir)
        create_database(args.admin_url, db_name)
        try:
            api_port, echo_port = c.free_port(), c.free_port()
            api_proc = processes.start(
                "api",
                [sys.executable, "-m", "postwright", "serve", "--no-worker", "--host", HOST, "--port", str(api_port)],
                env,
            )
            echo_proc = processes.start(
                "echo", [sys.executable, str(Path(__file__).resolve()), "--serve-echo", str(echo_port)], env
            )
            base = f"http://{HOST}:{api_port}"
            echo_url = f"http://{HOST}:{echo_port}/echo"
            wait_ready({"api": f"{base}/readyz", "echo": echo_url}, {"api": api_proc, "echo": echo_proc})

            api = base + API_PREFIX
            auth = {"Authorization": f"Bearer {bootstrap(env)}", "Content-Type": "application/json"}
            account_ids, post_id = seed(api, auth)
            json_headers = {"Content-Type": "application/json"}
            scenarios = [
                Scenario("echo", "POST", echo_url, json.dumps(ECHO_BODY).encode(), json_headers, 200),
                Scenario(
                    "POST /posts (3 targets)",
                    "POST",
                    f"{api}/posts",
                    json.dumps(post_body(account_ids)).encode(),
                    auth,
                    201,
                    min_ratio=0.25,
                    max_p99_ms=25.0,
                ),
                Scenario(
                    "GET /posts/{id}",
                    "GET",
                    f"{api}/posts/{post_id}",
                    None,
                    {"Authorization": auth["Authorization"]},
                    200,
                    min_ratio=0.50,
                ),
            ]

            rows: list[Row] = []
            echo_rps: float | None = None
            for scenario in scenarios:
                if not args.json:
                    print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
                if wrk:
                    result = run_wrk(
                        wrk,
                        scenario,
                        connections=args.connections,
                        warmup=args.warmup,
                        duration=args.duration,
                        workdir=workdir,
                    )
                else:
                    result = run_aiohttp_load(
                        scenario,
                        connections=args.connections,
                        warmup=args.warmup,
                        duration=args.duration,
                        max_requests=args.max_requests,
                    )
                if scenario.name == "echo":
                    echo_rps = result.rps
                rows.append(evaluate(scenario, result, echo_rps))
                for name, process in (("api", api_proc), ("echo", echo_proc)):
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited during the run with code {process.returncode}")
            return rows, client
        except Exception as exc:
            logs = "".join(f"\n--- {name} log (tail) ---\n{processes.log_tail(name)}" for name in ("api", "echo"))
            raise RuntimeError(f"{exc}{logs}") from exc
        finally:
            processes.stop_all()
            drop_database(args.admin_url, db_name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_echo is not None:
        serve_echo(args.serve_echo)
        return 0
    # SIGTERM raises SystemExit so that `run` still stops its subprocesses and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rows, client = run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "client": client,
                    "connections": args.connections,
                    "duration": args.duration,
                    "warmup": args.warmup,
                    "cpus": os.cpu_count(),
                    "results": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    else:
        print(render_table(rows, client=client, connections=args.connections, duration=args.duration))
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
