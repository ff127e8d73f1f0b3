"""Shared test fixtures: one fresh PostgreSQL database per test run, migrated once.

The server defaults to the machine's PostgreSQL (127.0.0.1:5432, database `test`); set
POSTWRIGHT_TEST_DATABASE_URL to use another. Every run creates `pw_test_<random>` and drops it at the end,
so runs never collide. Tests isolate from each other by creating their own workspaces.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from postwright.app import create_app
from postwright.config import Settings
from postwright.db.migrate import migrate
from postwright.db.session import create_engine, create_sessionmaker, to_plain_url, unit_of_work, with_database
from postwright.workspaces.service import workspaces_service

ADMIN_URL = os.environ.get("POSTWRIGHT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    name = f"pw_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(to_plain_url(ADMIN_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(to_plain_url(ADMIN_URL), name)
    admin = await asyncpg.connect(to_plain_url(ADMIN_URL))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def _is_loopback_sockaddr(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths never leave the machine
    host = str(address[0]).split("%", 1)[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket a test opens goes to 127.0.0.0/8 or ::1; anything else fails the test before connecting."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback_sockaddr(address):
            raise AssertionError(f"test tried to open a socket to non-loopback {address!r}")
        return real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback_sockaddr(address):
            raise AssertionError(f"test tried to open a socket to non-loopback {address!r}")
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, secret_key=None, max_body_bytes=262_144)


@pytest.fixture(scope="session")
def app(settings: Settings, engine: AsyncEngine) -> FastAPI:
    return create_app(settings, engine=engine)


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http:
        yield http


@dataclass
class Tenant:
    """A workspace with an all-scopes owner key, and helpers to call the API as it."""

    client: httpx.AsyncClient
    workspace_id: str
    user_id: str
    key: str
    accounts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def request(self, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}", **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def add_account(self, platform: str = "X", handle: str | None = None) -> dict[str, Any]:
        handle = handle or f"acct{len(self.accounts)}"
        response = await self.post(
            "/social-accounts",
            json={
                "platform": platform,
                "handle": handle,
                "displayName": handle.title(),
                "credentials": {
                    "accessToken": f"fake-{self.workspace_id}-{handle}",
                    "refreshToken": "r",
                    "expiresAt": "2030-01-01T00:00:00Z",
                },
            },
        )
        assert response.status_code == 201, response.text
        self.accounts.append(response.json())
        return response.json()

    async def create_post(self, **body: Any) -> dict[str, Any]:
        if "platforms" not in body and "targets" not in body:
            body["platforms"] = [{"accountId": a["id"]} for a in self.accounts]
        body.setdefault("content", "Hello from postwright")
        response = await self.post("/posts", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def make_key(
        self,
        *,
        role: str | None = None,
        scopes: list[str] | None = None,
        email: str | None = None,
        extra_workspaces: list[str] | None = None,
    ) -> str:
        from postwright.workspaces.auth import ALL_SCOPES

        async with unit_of_work(create_sessionmaker(self._engine)) as session:
            created = await workspaces_service.create_key(
                session,
                workspace_ids=[self.workspace_id, *(extra_workspaces or [])],
                scopes=scopes if scopes is not None else ALL_SCOPES,
                role=role,
                email=email,
            )
        return created.raw_key

    _engine: Any = None


TenantFactory = Callable[..., Awaitable[Tenant]]


@pytest.fixture
def make_tenant(client: httpx.AsyncClient, engine: AsyncEngine) -> TenantFactory:
    counter = {"n": 0}

    async def factory(accounts: int = 2, platform: str = "X") -> Tenant:
        counter["n"] += 1
        async with unit_of_work(create_sessionmaker(engine)) as session:
            made = await workspaces_service.bootstrap(
                session, workspace_name=f"Test {counter['n']}", email=f"owner{counter['n']}@example.com"
            )
        tenant = Tenant(client, made.workspace.id, made.user.id, made.key.raw_key)
        tenant._engine = engine
        for i in range(accounts):
            await tenant.add_account(platform, handle=f"acct{i}")
        return tenant

    return factory


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant()
