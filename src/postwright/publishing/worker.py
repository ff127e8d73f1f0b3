"""The worker process: pgqueuer consumers for publish jobs, plus the sweep/reconcile loop.

Any number of workers may share one database: jobs are dequeued by pgqueuer with row locks, and every
target is claimed by an atomic UPDATE, so no target is ever handled by two workers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import structlog
from pgqueuer import QueueManager
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job as QueueJob
from pgqueuer.queries import Queries
from ulid import ULID

from postwright.config import Settings
from postwright.db.session import create_engine, create_sessionmaker, to_plain_url, unit_of_work
from postwright.kit.crypto import TokenCipher, load_or_create_keys
from postwright.media.service import build_media_context, media_service
from postwright.publishing.batcher import DispatchBatcher
from postwright.publishing.engine import PublishEngine
from postwright.publishing.queue import DISPATCH_POST, FOLLOW_UPS

log = structlog.get_logger("postwright.worker")
MEDIA_SWEEP_EVERY = timedelta(minutes=10)
CAPACITY_RECHECK_S = 0.25


class _QueueManager(QueueManager):
    """pgqueuer's manager, without its busy polling while every job slot of this worker is taken.

    Between batches pgqueuer re-polls every `min_dequeue_poll_interval` as long as eligible work is
    queued, even when it may not take any: during a burst that is a dequeue plus a count over the whole
    queue every few milliseconds per worker, for nothing. While all `capacity` slots are busy we wait
    for one to free instead (bounded, so a missed wake-up costs a poll, never a stall). Overrides two
    internal hooks of pgqueuer; should they go away, pgqueuer merely polls as before.
    """

    def __init__(self, queries: Queries, *, capacity: int) -> None:
        super().__init__(queries)
        self.capacity = capacity
        self._slot_freed = asyncio.Event()

    def forget_job(self, *args: Any, **kwargs: Any) -> None:
        super().forget_job(*args, **kwargs)
        self._slot_freed.set()

    async def _effective_dequeue_timeout(self, dequeue_timeout: timedelta) -> timedelta:
        while len(getattr(self, "job_context", ())) >= self.capacity and not self.shutdown.is_set():
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), timeout=CAPACITY_RECHECK_S)
        return await super()._effective_dequeue_timeout(dequeue_timeout)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{str(ULID())[-6:]}"


async def run_worker(settings: Settings, *, stop: asyncio.Event | None) -> None:
    assert settings.database_url
    stop = stop or asyncio.Event()
    # A steady pool (no churn of overflow connections); every worker stays well under max_connections.
    engine = create_engine(
        settings.database_url, pool_size=max(4, min(16, settings.worker_concurrency // 4)), max_overflow=4
    )
    sessionmaker = create_sessionmaker(engine)
    keys = load_or_create_keys(settings.secret_key, settings.data_dir)
    media = build_media_context(settings, keys)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=settings.worker_concurrency * 4))
    publisher = PublishEngine(
        sessionmaker=sessionmaker,
        settings=settings,
        cipher=TokenCipher(keys),
        media=media,
        http=http,
        worker_id=new_worker_id(),
    )
    connection = await asyncpg.connect(to_plain_url(settings.database_url))
    batch = max(1, settings.worker_concurrency // 2)
    max_tasks = max(settings.worker_concurrency, 2 * batch)
    manager = _QueueManager(Queries(AsyncpgDriver(connection)), capacity=max_tasks)
    # pgqueuer may wake a hair before a job is due and then sleep its minimum poll interval (100 ms by
    # default); a short floor keeps single posts on time.
    manager.min_dequeue_poll_interval = timedelta(milliseconds=5)

    batcher = DispatchBatcher(publisher.dispatch_many, max_batch=batch)

    @manager.entrypoint(DISPATCH_POST)
    async def dispatch(job: QueueJob) -> None:
        payload = json.loads(job.payload or b"{}")
        await batcher.submit(payload["postId"], int(payload["generation"]))

    @manager.entrypoint(FOLLOW_UPS)
    async def follow_ups(job: QueueJob) -> None:
        payload = json.loads(job.payload or b"{}")
        await publisher.follow_up(payload["targetId"], from_job=True)

    async def maintenance() -> None:
        last_media_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await publisher.reconcile()
                await publisher.sweep()
                await publisher.sweep_follow_ups()
                if loop.time() - last_media_sweep > MEDIA_SWEEP_EVERY.total_seconds():
                    last_media_sweep = loop.time()
                    async with unit_of_work(sessionmaker) as session:
                        await media_service.sweep(session, media)
            except Exception:
                log.exception("worker.maintenance_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.sweep_interval_seconds)

    async def stopper() -> None:
        await stop.wait()
        manager.shutdown.set()

    log.info("worker.start", worker_id=publisher.worker_id, concurrency=settings.worker_concurrency)
    tasks = [asyncio.create_task(maintenance()), asyncio.create_task(stopper())]
    try:
        await manager.run(
            batch_size=batch,
            max_concurrent_tasks=max_tasks,
            dequeue_timeout=timedelta(seconds=5),
        )
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.close()
        await connection.close()
        await engine.dispose()
        log.info("worker.stop", worker_id=publisher.worker_id)
