"""The publishing worker (placeholder until the engine lands): consumes nothing yet, waits to stop."""

from __future__ import annotations

import asyncio

from postwright.config import Settings


async def run_worker(settings: Settings, *, stop: asyncio.Event | None) -> None:
    await (stop or asyncio.Event()).wait()
