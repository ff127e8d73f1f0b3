"""Schema migrations: Alembic for our tables, pgqueuer's own installer for its queue tables.

Both run under one PostgreSQL advisory lock so several processes starting together do not race.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant shared by every postwright process: "postwright migrate" as a 64-bit key.
MIGRATION_LOCK_KEY = 0x706F73747772_0001


def alembic_config() -> Config:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            await conn.commit()
            await conn.run_sync(_upgrade)
            await conn.commit()
            raw = await conn.get_raw_connection()
            queries = Queries(AsyncpgDriver(raw.driver_connection))
            if await queries.schema_is_installed():
                await queries.upgrade()
            else:
                await queries.install()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.commit()
