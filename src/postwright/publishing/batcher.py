"""Gathering dispatch jobs that arrive together, so one claim/mark/record transaction serves many posts.

pgqueuer hands jobs over one at a time; at a burst, dozens arrive within milliseconds. Each job waits
here for at most `linger` seconds to join a batch, and its handler returns only once the batch is done,
so pgqueuer's bookkeeping (and at-least-once delivery) is unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("postwright.publishing")

Item = tuple[str, int | None]


class DispatchBatcher:
    def __init__(
        self, handle: Callable[[list[Item]], Awaitable[int]], *, max_batch: int = 32, linger: float = 0.003
    ) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._linger = linger
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self._flush_scheduled = False

    async def submit(self, post_id: str, generation: int | None) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((post_id, generation), future))
        if len(self._pending) >= self._max_batch:
            self._start_batch()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self._linger, self._start_batch)
        await future

    def _start_batch(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_batch)
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        # One post may be queued twice (a retry job beside the first); the claim dedupes targets anyway.
        items = list(dict.fromkeys(item for item, _ in batch))
        try:
            await self._handle(items)
        except Exception as exc:
            log.exception("publishing.batch_failed", size=len(items))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
