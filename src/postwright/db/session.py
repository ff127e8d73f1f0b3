"""Engine and session factory; the edge (request, job, CLI command) owns the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = structlog.get_logger("postwright.db")


def to_asyncpg_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+asyncpg:// URLs alike."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host:port/db)")


def to_plain_url(url: str) -> str:
    """The libpq form asyncpg.connect() accepts (for pgqueuer and raw connections)."""
    return "postgresql://" + to_asyncpg_url(url)[len("postgresql+asyncpg://") :]


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> AsyncEngine:
    return create_async_engine(
        to_asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        # No pre-ping: it costs a round trip per request; recycled connections cover server restarts.
        pool_recycle=300,
        connect_args={"server_settings": {"application_name": "postwright", "timezone": "UTC"}},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the session's transaction has committed (e.g. deleting stored files)."""
    session.info.setdefault("after_commit", []).append(callback)


def after_rollback(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` if the session's transaction rolls back (e.g. removing files stored for rows that vanish)."""
    session.info.setdefault("after_rollback", []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    session.info.pop("after_rollback", None)
    await _run(session.info.pop("after_commit", []), "db.after_commit_failed")


async def run_after_rollback(session: AsyncSession) -> None:
    session.info.pop("after_commit", None)
    await _run(session.info.pop("after_rollback", []), "db.after_rollback_failed")


async def _run(callbacks: list[AfterCommit], failure_event: str) -> None:
    for callback in callbacks:
        try:
            await callback()
        except Exception:  # a failed side effect must never change the request's outcome
            log.exception(failure_event)


@asynccontextmanager
async def unit_of_work(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            await run_after_rollback(session)
            raise
        await session.commit()
        await run_after_commit(session)
