"""Running the process: migrate, then the API (uvicorn) and the publishing worker side by side."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import structlog
import uvicorn

from postwright.app import create_app
from postwright.config import Settings
from postwright.db.migrate import migrate
from postwright.db.session import create_engine

log = structlog.get_logger("postwright.server")


async def run_server(settings: Settings, *, with_worker: bool, sandbox: bool = False) -> None:
    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    await migrate(engine)
    if sandbox:
        from postwright.sandbox.endpoints import X_PREFIX

        # The worker publishes to the fakes this very process serves.
        settings = settings.model_copy(
            update={
                "platform_x_base_url": settings.base_public_url.rstrip("/") + X_PREFIX,
                "x_client_id": settings.x_client_id or "sandbox",
            }
        )
    app = create_app(settings, engine=engine)
    if sandbox:
        from postwright.sandbox.endpoints import mount_fakes

        app.state.sandbox = True
        mount_fakes(app)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", lifespan="on", access_log=False
    )
    server = _Server(config)
    worker_task: asyncio.Task[None] | None = None
    stop_worker = asyncio.Event()
    if with_worker:
        from postwright.publishing.worker import run_worker

        worker_task = asyncio.create_task(run_worker(settings, stop=stop_worker))
    log.info("server.start", host=settings.host, port=settings.port, worker=with_worker, sandbox=sandbox)
    try:
        await server.serve()
    finally:
        if worker_task is not None:
            # Let in-flight publishes record their outcome; a lease covers anything cut short.
            stop_worker.set()
            try:
                await asyncio.wait_for(worker_task, timeout=settings.platform_timeout_seconds + 5)
            except (TimeoutError, Exception):
                log.warning("server.worker_stop_timeout")
        await engine.dispose()
        log.info("server.stop")


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after shutting down, which would kill the process before the
    worker and the embedded database stop; here a signal only asks the server to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def run_worker_only(settings: Settings) -> None:
    from postwright.publishing.worker import run_worker

    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=2)
    await migrate(engine)
    await engine.dispose()
    await run_worker(settings, stop=None)
