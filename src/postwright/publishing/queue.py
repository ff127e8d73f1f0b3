"""Transactional enqueue of publish jobs on pgqueuer.

The job row is inserted on the very connection and transaction of the caller's session, so a post change
and its job commit or roll back together. Jobs carry ids and the post's generation, never objects.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.kit.clock import utcnow

DISPATCH_POST = "publishing.dispatch_post"
FIRST_COMMENT = "publishing.first_comment"
ENTRYPOINTS = (DISPATCH_POST, FIRST_COMMENT)


async def _queries(session: AsyncSession) -> Queries:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return Queries(AsyncpgDriver(raw.driver_connection))  # type: ignore[arg-type]


async def enqueue(session: AsyncSession, entrypoint: str, payload: dict[str, object], due_at: datetime) -> int:
    delay = max(due_at - utcnow(), timedelta(0))
    queries = await _queries(session)
    ids = await queries.enqueue(entrypoint, json.dumps(payload).encode(), execute_after=delay)
    return int(ids[0])


async def enqueue_dispatch(session: AsyncSession, *, post_id: str, generation: int, due_at: datetime) -> int:
    """Queue the job that publishes the post's due targets; returns the pgqueuer job id."""
    return await enqueue(session, DISPATCH_POST, {"postId": post_id, "generation": generation}, due_at)


async def enqueue_first_comment(session: AsyncSession, *, target_id: str, due_at: datetime) -> int:
    return await enqueue(session, FIRST_COMMENT, {"targetId": target_id}, due_at)


def workflow_id_for(job_id: int) -> str:
    return f"wf_{job_id}"
