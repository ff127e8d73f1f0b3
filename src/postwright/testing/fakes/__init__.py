"""Wire-exact fake platform servers (ASGI) for tests, chaos runs and the sandbox mode.

`create_fake_app("X")` builds one; `serve_fake("X")` runs it with uvicorn on a free loopback port in a
background thread and yields its base URL (point `POSTWRIGHT_PLATFORM_<KEY>_BASE_URL` or
`AdapterContext.base_url` there; Bluesky accounts use it as their `serviceUrl`). From another process,
run one with `uvicorn --factory postwright.testing.fakes.x:create_x_app --port 9001` and drive it through
its `/_fake/...` admin API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette

from postwright.testing.fakes.bluesky import FakeBluesky, create_bluesky_app
from postwright.testing.fakes.common import FakePlatform, FakePost, Knobs, RequestRecord, ScriptedFailure
from postwright.testing.fakes.x import FakeX, create_x_app

_FACTORIES: dict[str, Callable[[], Starlette]] = {"X": create_x_app, "BLUESKY": create_bluesky_app}

__all__ = [
    "FakeBluesky",
    "FakePlatform",
    "FakePost",
    "FakeX",
    "Knobs",
    "RequestRecord",
    "RunningFake",
    "ScriptedFailure",
    "create_fake_app",
    "serve_fake",
    "start_fake",
]


def create_fake_app(platform_key: str) -> Starlette:
    """The fake server of one platform key ("X", "BLUESKY"); KeyError for platforms without a fake."""
    return _FACTORIES[platform_key.upper()]()


@dataclass
class RunningFake:
    app: Starlette
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def fake(self) -> Any:
        return self.app.state.fake

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_fake(app_or_key: Starlette | str, *, host: str = "127.0.0.1", port: int = 0) -> RunningFake:
    """Run a fake with uvicorn in a daemon thread; port 0 picks a free port. Call `.stop()` when done."""
    app = create_fake_app(app_or_key) if isinstance(app_or_key, str) else app_or_key
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Handlers hanging on purpose ("answer lost") must not hold shutdown for long.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"fake-{id(app):x}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake platform server did not start")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    return RunningFake(app=app, base_url=f"http://{host}:{bound_port}", server=server, thread=thread)


@contextmanager
def serve_fake(app_or_key: Starlette | str, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningFake]:
    """`with serve_fake("X") as running: ... running.base_url ... running.fake`."""
    running = start_fake(app_or_key, host=host, port=port)
    try:
        yield running
    finally:
        running.stop()
