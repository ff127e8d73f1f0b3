"""End to end: `postwright serve` as a subprocess on the embedded PostgreSQL, driven over HTTP and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWRIGHT_") and k != "DATABASE_URL"}
    env["POSTWRIGHT_DATA_DIR"] = str(data_dir)
    return env


def run_cli(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "postwright", *args], env=cli_env(data_dir), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class Served:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> float:
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postwright", "serve", "--port", str(self.port), "--no-worker"],
            env=cli_env(self.data_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = started + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.process.communicate()[1]
            time.sleep(0.05)
        raise AssertionError("postwright serve did not become ready in 30 s")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-data")


@pytest.fixture(scope="module")
def served(data_dir: Path) -> Iterator[Served]:
    server = Served(data_dir)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.stop()


def test_walkthrough_over_http(served: Served, data_dir: Path) -> None:
    boot = json.loads(run_cli(data_dir, "bootstrap", "--workspace", "Acme", "--email", "owner@acme.test", "--json"))
    assert set(boot) == {"workspaceId", "userId", "apiKey"}
    assert boot["apiKey"].startswith("pw_live_")
    other = json.loads(run_cli(data_dir, "bootstrap", "--workspace", "Other", "--email", "o@other.test", "--json"))
    assert other["workspaceId"] != boot["workspaceId"]

    http = httpx.Client(base_url=f"{served.base}/api/v1", headers={"Authorization": f"Bearer {boot['apiKey']}"})
    account = http.post(
        "/social-accounts", json={"platform": "X", "handle": "acme", "credentials": {"accessToken": "t"}}
    )
    assert account.status_code == 201
    due = (datetime.now(UTC) + timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    created = http.post(
        "/posts", json={"content": "Hello", "scheduledFor": due, "platforms": [{"accountId": account.json()["id"]}]}
    )
    assert created.status_code == 201
    post_id = created.json()["id"]
    assert created.json()["status"] == "SCHEDULED"
    canceled = http.post(f"/posts/{post_id}/cancel", json={"reason": "hold"})
    assert canceled.json()["status"] == "CANCELED"
    edited = http.patch(
        f"/posts/{post_id}",
        json={"content": "Hello again", "scheduledFor": due, "platforms": [{"accountId": account.json()["id"]}]},
    )
    assert edited.json()["status"] == "SCHEDULED"
    assert http.delete(f"/posts/{post_id}").status_code == 200
    assert http.get(f"/posts/{post_id}").status_code == 404

    other_http = httpx.Client(base_url=f"{served.base}/api/v1", headers={"x-api-key": other["apiKey"]})
    assert other_http.get(f"/social-accounts/{account.json()['id']}").status_code == 404

    key = json.loads(
        run_cli(
            data_dir,
            "keys",
            "create",
            "--workspace",
            boot["workspaceId"],
            "--role",
            "VIEWER",
            "--scopes",
            "posts:read",
            "--json",
        )
    )
    assert set(key) == {"id", "apiKey"}
    viewer = httpx.Client(base_url=f"{served.base}/api/v1", headers={"Authorization": f"Bearer {key['apiKey']}"})
    assert viewer.get("/posts").status_code == 200
    assert viewer.post("/posts", json={"platforms": []}).status_code in (400, 403)
    listed = json.loads(run_cli(data_dir, "keys", "list", "--workspace", boot["workspaceId"], "--json"))
    assert key["id"] in [k["id"] for k in listed]
    assert all("apiKey" not in k for k in listed)
    run_cli(data_dir, "keys", "revoke", key["id"])
    assert viewer.get("/posts").status_code == 401


def test_restart_keeps_data_and_stops_cleanly(served: Served, data_dir: Path) -> None:
    boot = json.loads(run_cli(data_dir, "bootstrap", "--workspace", "Persist", "--email", "p@p.test", "--json"))
    assert served.stop() == 0
    pg_pid_file = data_dir / "pg" / "postmaster.pid"
    assert not pg_pid_file.exists(), "the embedded database should stop with the server"
    ready_in = served.start()
    assert ready_in < 5, f"ready after {ready_in:.1f} s"
    http = httpx.Client(base_url=f"{served.base}/api/v1", headers={"Authorization": f"Bearer {boot['apiKey']}"})
    assert http.get("/workspace").json()["id"] == boot["workspaceId"]
    assert served.stop() == 0


def test_migrate_command(data_dir: Path) -> None:
    run_cli(data_dir, "migrate")


def test_sandbox_publishes_to_in_process_fakes(tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("sandbox")
    server = Served(data_dir)
    server.process = subprocess.Popen(
        [sys.executable, "-m", "postwright", "serve", "--port", str(server.port), "--sandbox"],
        env={**cli_env(data_dir), "POSTWRIGHT_PORT": str(server.port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        boot = json.loads(run_cli(data_dir, "bootstrap", "--workspace", "Demo", "--email", "d@demo.test", "--json"))
        http = httpx.Client(
            base_url=f"{server.base}/api/v1", headers={"Authorization": f"Bearer {boot['apiKey']}"}, timeout=10
        )
        accounts = http.post("/sandbox/accounts")
        assert accounts.status_code == 201, accounts.text
        ids = [a["id"] for a in accounts.json()["data"]]
        post = http.post(
            "/posts", json={"content": "Hello sandbox", "platforms": [{"accountId": i} for i in ids]}
        ).json()
        assert http.post(f"/posts/{post['id']}/publish", json={"leadSeconds": 0}).json()["status"] == "SCHEDULED"
        for _ in range(100):
            status = http.get(f"/posts/{post['id']}/status").json()
            if status["status"] not in ("SCHEDULED", "PUBLISHING"):
                break
            time.sleep(0.1)
        assert status["status"] == "PUBLISHED", status
        assert all(t["externalUrl"] for t in status["targets"])
        fake_posts = httpx.get(f"{server.base}/sandbox/x/_fake/posts").json()
        posts = fake_posts["posts"] if isinstance(fake_posts, dict) else fake_posts
        assert any("Hello sandbox" in p["text"] for p in posts)
    finally:
        assert server.stop() == 0
