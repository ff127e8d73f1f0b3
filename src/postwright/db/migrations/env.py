"""Alembic environment.

`postwright.db.migrate` hands over an open (sync-facing) connection in `config.attributes["connection"]`,
so migrations run inside the caller's advisory-locked transaction. Without one (developer running
autogenerate), it connects to `config.attributes["url"]` itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from postwright.db import models  # noqa: F401  (registers every table)
from postwright.db.base import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    engine = create_async_engine(config.attributes["url"], poolclass=pool.NullPool)
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    asyncio.run(_run_standalone())
