"""The engine's plain-row writes: RowState change tracking and update_by_id (unnest and executemany paths)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from postwright.publishing.status import RowState, update_by_id, write_changes

from .helpers import fetch

_meta = MetaData()
ROWS = Table(
    "pw_test_row_updates",
    _meta,
    Column("id", String(40), primary_key=True),
    Column("status", String(16)),
    Column("count", Integer),
    Column("at", DateTime(timezone=True)),
    Column("extra", JSON),
    Column("updated_at", DateTime(timezone=True), onupdate=lambda: datetime.now(UTC)),
)


def test_row_state_tracks_only_real_changes_and_refuses_unknown_columns():
    row = RowState({"id": "a", "status": "X", "count": 1})
    row.status = "X"
    assert row.changes() == {}
    row.count = 2
    row.status = None
    assert row.changes() == {"count": 2, "status": None}
    with pytest.raises(AttributeError):
        row.statsu = "typo"
    with pytest.raises(AttributeError):
        _ = row.missing
    with pytest.raises(AttributeError):
        row.id = "b"  # writes go by id


async def test_update_by_id_writes_each_row_its_own_values(engine: AsyncEngine):
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with engine.connect() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS pw_test_row_updates"))
        await connection.run_sync(_meta.create_all)
        await connection.execute(
            ROWS.insert(), [{"id": i, "status": "OLD", "count": 0, "at": None, "extra": None} for i in "abcd"]
        )
        session = AsyncSession(bind=connection)
        statements: list[str] = []
        event.listen(connection.sync_connection, "before_cursor_execute", lambda *a: statements.append(a[2]))
        rows = {r: RowState({"id": r, "status": "OLD", "count": 0, "at": None, "extra": None}) for r in "abc"}
        rows["a"].status, rows["a"].at = "NEW", at  # one column set ...
        rows["b"].status, rows["b"].at = None, at  # ... shared by two rows (one UNNEST statement)
        rows["c"].count = 7  # another set
        await write_changes(session, ROWS, rows.values())
        await update_by_id(session, ROWS, [{"id": "d", "extra": {"k": [1]}}])  # JSON: the executemany path
        got = {r.id: r for r in (await connection.execute(ROWS.select())).all()}
        await connection.execute(text("DROP TABLE pw_test_row_updates"))
        await connection.commit()
    assert (got["a"].status, got["a"].at, got["a"].count) == ("NEW", at, 0)
    assert (got["b"].status, got["b"].at) == (None, at)
    assert (got["c"].status, got["c"].count) == ("OLD", 7)
    assert got["d"].extra == {"k": [1]}
    assert all(got[r].updated_at is not None for r in "abcd")
    assert len([s for s in statements if "unnest" in s]) == 2  # one per column set, not one per row


async def test_update_by_id_refuses_a_value_too_long_for_its_column(tenant, engine: AsyncEngine):
    """The array casts are unbounded: the column's own length check applies, nothing is cut off."""
    from postwright.publishing.status import TARGETS

    post = await tenant.create_post(content="long id")
    target_id = post["targets"][0]["id"]
    async with engine.connect() as connection:
        session = AsyncSession(bind=connection)
        with pytest.raises(DBAPIError, match="too long"):
            await update_by_id(session, TARGETS, [{"id": target_id, "external_post_id": "9" * 300}])
        await connection.rollback()
        await update_by_id(session, TARGETS, [{"id": target_id, "external_post_id": "9" * 255}])
        await connection.commit()
    rows = await fetch(engine, "SELECT external_post_id FROM post_targets WHERE id = :id", id=target_id)
    assert rows[0][0] == "9" * 255
