"""Fake platform servers on loopback ports and a real aiohttp session, shared by the adapter tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from postwright.publishing.platforms.base import AdapterContext, Credentials, OutboundPost
from postwright.publishing.platforms.bluesky import BlueskyAdapter, verify_login
from postwright.publishing.platforms.x import XAdapter
from postwright.testing.fakes import FakeBluesky, FakeX, RunningFake, serve_fake

X_TOKEN = "x-access-alice"
X_REFRESH = "x-refresh-alice"
BSKY_HANDLE = "alice.test"
BSKY_PASSWORD = "abcd-efgh-ijkl-mnop"


@pytest.fixture(scope="session")
def x_server() -> Iterator[RunningFake]:
    with serve_fake("X") as running:
        yield running


@pytest.fixture(scope="session")
def bluesky_server() -> Iterator[RunningFake]:
    with serve_fake("BLUESKY") as running:
        yield running


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- X --------------------------------------------------------------------------------------------------


@pytest.fixture
def x_fake(x_server: RunningFake) -> FakeX:
    fake: FakeX = x_server.fake
    fake.reset(accounts=True)
    fake.processing_check_after_secs = 0
    fake.processing_polls = 1
    return fake


@pytest.fixture
def x_ctx(http: aiohttp.ClientSession, x_server: RunningFake) -> AdapterContext:
    return AdapterContext(
        http=http, base_url=x_server.base_url, client_id="client-1", client_secret="secret-1", timeout_seconds=2.0
    )


@pytest.fixture
def x_adapter(x_ctx: AdapterContext) -> XAdapter:
    return XAdapter(x_ctx)


@pytest.fixture
def x_creds(x_fake: FakeX) -> Credentials:
    account = x_fake.register_account(username="alice", access_token=X_TOKEN, refresh_token=X_REFRESH)
    return Credentials(
        access_token=X_TOKEN, refresh_token=X_REFRESH, extra={"userId": account.user_id, "username": "alice"}
    )


@pytest.fixture
def x_post() -> OutboundPost:
    return OutboundPost(target_id="tgt-1", text="Hello from postwright", account_handle="alice")


# -- Bluesky --------------------------------------------------------------------------------------------


@pytest.fixture
def bsky_fake(bluesky_server: RunningFake) -> FakeBluesky:
    fake: FakeBluesky = bluesky_server.fake
    fake.reset(accounts=True)
    fake.register_account(handle=BSKY_HANDLE, password=BSKY_PASSWORD, display_name="Alice")
    return fake


@pytest.fixture
def bsky_ctx(http: aiohttp.ClientSession) -> AdapterContext:
    return AdapterContext(http=http, timeout_seconds=2.0)


@pytest.fixture
def bsky_adapter(bsky_ctx: AdapterContext) -> BlueskyAdapter:
    return BlueskyAdapter(bsky_ctx)


@pytest.fixture
async def bsky_creds(bsky_fake: FakeBluesky, bsky_ctx: AdapterContext, bluesky_server: RunningFake) -> Credentials:
    login = await verify_login(
        bsky_ctx, identifier=BSKY_HANDLE, app_password=BSKY_PASSWORD, service_url=bluesky_server.base_url
    )
    bsky_fake.reset()  # forget the login requests: tests assert on what publishing sends
    return login.credentials
