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
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from postwright.db.migrate import migrate
from postwright.db.session import create_engine, to_plain_url, with_database

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
