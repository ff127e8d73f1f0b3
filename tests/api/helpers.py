"""Small database helpers for assertions on rows the API wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def future(**delta: float) -> str:
    return iso(datetime.now(UTC) + timedelta(**delta))


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def fetch(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def job_for(engine: AsyncEngine, workflow_id: str) -> Any:
    job_id = int(workflow_id.removeprefix("wf_"))
    rows = await fetch(
        engine, "SELECT id, entrypoint, payload, execute_after, status FROM pgqueuer WHERE id = :id", id=job_id
    )
    assert rows, f"no pgqueuer job {job_id}"
    row = rows[0]
    return {
        "id": row.id,
        "entrypoint": row.entrypoint,
        "payload": json.loads(bytes(row.payload)),
        "execute_after": row.execute_after,
        "status": row.status,
    }


async def jobs_for_post(engine: AsyncEngine, post_id: str) -> list[dict[str, Any]]:
    rows = await fetch(engine, "SELECT id, payload, execute_after FROM pgqueuer ORDER BY id")
    out = []
    for row in rows:
        payload = json.loads(bytes(row.payload))
        if payload.get("postId") == post_id:
            out.append({"id": row.id, "payload": payload, "execute_after": row.execute_after})
    return out
