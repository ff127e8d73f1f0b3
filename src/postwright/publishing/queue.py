"""Transactional enqueue of publish jobs on pgqueuer.

The job row is inserted on the very connection and transaction of the caller's session, so a post change
and its job commit or roll back together. Jobs carry ids and the post's generation, never objects.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import cache

from pgqueuer.queries import Queries
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.kit.clock import utcnow

DISPATCH_POST = "publishing.dispatch_post"
# Thread parts and the first comment of a published target (the name predates threads).
FOLLOW_UPS = "publishing.first_comment"
ENTRYPOINTS = (DISPATCH_POST, FOLLOW_UPS)


@cache
def _enqueue_sql() -> str:
    # pgqueuer's own INSERT (schema-aware), built once; executing it ourselves keeps it on our transaction.
    return Queries(None).qbq.build_enqueue_query("raise")  # type: ignore[arg-type]


async def enqueue_many(session: AsyncSession, jobs: list[tuple[str, dict[str, object], datetime]]) -> list[int]:
    """Insert several jobs in one statement on the session's connection and transaction."""
    if not jobs:
        return []
    now = utcnow()
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    rows = await raw.fetch(  # type: ignore[union-attr]
        _enqueue_sql(),
        [0] * len(jobs),
        [entrypoint for entrypoint, _, _ in jobs],
        [json.dumps(payload).encode() for _, payload, _ in jobs],
        [max(due_at - now, timedelta(0)) for _, _, due_at in jobs],
        [None] * len(jobs),
        ["null"] * len(jobs),
    )
    return [int(row["id"]) for row in rows]


async def enqueue(session: AsyncSession, entrypoint: str, payload: dict[str, object], due_at: datetime) -> int:
    return (await enqueue_many(session, [(entrypoint, payload, due_at)]))[0]


async def enqueue_dispatch(session: AsyncSession, *, post_id: str, generation: int, due_at: datetime) -> int:
    """Queue the job that publishes the post's due targets; returns the pgqueuer job id."""
    return await enqueue(session, DISPATCH_POST, {"postId": post_id, "generation": generation}, due_at)


async def enqueue_follow_ups(session: AsyncSession, *, target_id: str, due_at: datetime) -> int:
    return await enqueue(session, FOLLOW_UPS, {"targetId": target_id}, due_at)


def workflow_id_for(job_id: int) -> str:
    return f"wf_{job_id}"
