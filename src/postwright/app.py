"""create_app(): routers, error handlers, middleware and the database lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from postwright.accounts.endpoints import router as accounts_router
from postwright.accounts.service import accounts_service
from postwright.accounts.verification import bluesky_verifier
from postwright.api.errors import install_error_handlers
from postwright.api.idempotency import IdempotencyMiddleware
from postwright.api.middleware import RequestContextMiddleware
from postwright.api.ops import router as ops_router
from postwright.config import Settings, get_settings
from postwright.db.session import create_engine, create_sessionmaker
from postwright.kit.crypto import TokenCipher, load_or_create_keys
from postwright.media.endpoints import router as media_router
from postwright.media.service import MediaContext, build_media_context, media_service
from postwright.media.ssrf import SIZE_CAPS
from postwright.posts.endpoints import router as posts_router
from postwright.posts.schemas import MediaItemIn
from postwright.posts.service import posts_service
from postwright.sandbox.endpoints import router as sandbox_router
from postwright.workspaces.auth import Principal
from postwright.workspaces.endpoints import router as workspaces_router

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    settings = settings or get_settings()
    owns_engine = engine is None
    engine = engine or create_engine(_database_url(settings), pool_size=settings.db_pool_size)
    sessionmaker = create_sessionmaker(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if app.state.http is not None:
            await app.state.http.close()
        if owns_engine:
            await engine.dispose()

    app = FastAPI(
        title="postwright",
        version="0.1.0",
        description="Create a post once, publish it exactly once on every connected account.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker
    keys = load_or_create_keys(settings.secret_key, settings.data_dir)
    app.state.cipher = TokenCipher(keys)
    app.state.media = build_media_context(settings, keys)
    app.state.http = None
    app.state.sandbox = False
    wire_domains(app)

    api = APIRouter(prefix=API_PREFIX)
    for router in (posts_router, accounts_router, media_router, workspaces_router, sandbox_router, ops_router):
        api.include_router(router)
    app.include_router(api)
    app.include_router(ops_router)  # /healthz, /readyz, /metrics also at the root for probes
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware, sessionmaker=sessionmaker, ttl_hours=settings.idempotency_ttl_hours)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, upload_max_bytes=max(SIZE_CAPS.values())
    )
    return app


def wire_domains(app: FastAPI) -> None:
    """Let the posts domain reach media through the services, with this app's storage."""
    media: MediaContext = app.state.media

    async def ingest(session: AsyncSession, principal: Principal, items: list[MediaItemIn]) -> list[str]:
        return await media_service.ingest_items(session, principal, media, items)

    async def deleter(session: AsyncSession, principal: Principal, ids: list[str]) -> None:
        await media_service.delete_assets(session, principal, media, ids)

    posts_service.media_ingest = ingest
    posts_service.media_deleter = deleter

    async def http() -> aiohttp.ClientSession:
        # Created on first use: the session must belong to the running event loop.
        if app.state.http is None:
            app.state.http = aiohttp.ClientSession()
        return app.state.http

    accounts_service.verifiers["BLUESKY"] = bluesky_verifier(http, app.state.settings.platform_timeout_seconds)


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; `postwright serve` starts an embedded PostgreSQL for you.")
    return settings.database_url
