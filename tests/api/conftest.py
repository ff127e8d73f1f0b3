"""Fixtures shared by the publishing tests: fake platforms on loopback and a tuned publish engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from postwright.db.session import create_sessionmaker
from postwright.publishing.engine import PublishEngine
from postwright.testing.fakes import RunningFake, serve_fake


@pytest.fixture(scope="session")
def fake_x() -> Iterator[RunningFake]:
    with serve_fake("X") as running:
        yield running


@pytest.fixture(scope="session")
def fake_bsky() -> Iterator[RunningFake]:
    with serve_fake("BLUESKY") as running:
        yield running


def build_publisher(settings, engine, app, http, worker_id: str = "test-worker") -> PublishEngine:
    return PublishEngine(
        sessionmaker=create_sessionmaker(engine),
        settings=settings,
        cipher=app.state.cipher,
        media=app.state.media,
        http=http,
        worker_id=worker_id,
    )


@pytest.fixture
async def publisher(settings, engine, app, fake_x) -> AsyncIterator[PublishEngine]:
    tuned = settings.model_copy(
        update={
            "platform_x_base_url": fake_x.base_url,
            "platform_timeout_seconds": 1.0,
            "publish_lease_seconds": 3.0,
            "retry_base_seconds": 0.05,
            "publish_max_attempts": 3,
            "x_client_id": "postwright-test",
        }
    )
    async with aiohttp.ClientSession() as http:
        yield build_publisher(tuned, engine, app, http, "test-worker")


def slow_platform_settings(settings, fake_x: RunningFake):
    """A short lease (1.5 s) and a patient client (6 s): a 2.5 s answer outlives the lease."""
    return settings.model_copy(
        update={
            "platform_x_base_url": fake_x.base_url,
            "platform_timeout_seconds": 6.0,
            "publish_lease_seconds": 1.5,
            "x_client_id": "postwright-test",
        }
    )
