"""Keeping a post's aggregate status right after its targets change (always under the post's row lock)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Integer,
    Result,
    String,
    Table,
    Text,
    TextClause,
    any_,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from postwright.db.models import Post, PostTarget, PublishAttempt
from postwright.kit.clock import utcnow
from postwright.posts.status import PostStatus, derive_post_status


async def lock_post(session: AsyncSession, post_id: str, *, skip_locked: bool = False) -> Post | None:
    """Lock order everywhere is post row first, then target rows, so cancel and the worker never deadlock."""
    return await session.scalar(
        select(Post)
        .where(Post.id == post_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )


# Table handles for the plain-row statements (the engine's hot transactions and the claim).
POSTS: Table = Post.__table__  # type: ignore[assignment]
TARGETS: Table = PostTarget.__table__  # type: ignore[assignment]
ATTEMPTS: Table = PublishAttempt.__table__  # type: ignore[assignment]


def any_ids(ids: Iterable[str]) -> Any:
    """`= ANY(array)` instead of `IN (...)`: one SQL text (so one prepared statement) whatever the count."""
    return any_(bindparam(None, list(ids), type_=ARRAY(String)))


async def lock_post_ids(session: AsyncSession, post_ids: list[str]) -> list[str]:
    """Lock post rows in id order, loading nothing but their ids (for transactions that only need the lock)."""
    if not post_ids:
        return []
    rows = await session.scalars(
        select(Post.id).where(Post.id == any_ids(sorted(set(post_ids)))).order_by(Post.id).with_for_update()
    )
    return list(rows)


class RowState:
    """A plain, mutable copy of one table row that remembers what it was loaded as.

    The engine's hot transactions read and change hundreds of rows; ORM instances (identity map, attribute
    instrumentation, unit-of-work flush) cost more CPU than the work itself. Code reads and assigns
    attributes just as on a mapped instance, then `write_changes` issues one UPDATE per set of changed
    columns, by primary key.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
        self.__dict__["_loaded"] = values

    def __getattr__(self, name: str) -> Any:  # only reached for unknown names: a typo, not a column
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A mapped instance would silently keep an unknown attribute unsaved; here it is a bug, said loudly.
        if name not in self.__dict__["_loaded"]:
            raise AttributeError(f"{name!r} is not a loaded column")
        if name == "id":  # writes go by id: a new one would update another row
            raise AttributeError("the primary key of a loaded row cannot change")
        self.__dict__[name] = value

    def changes(self) -> dict[str, Any]:
        loaded: dict[str, Any] = self.__dict__["_loaded"]
        return {k: v for k, v in self.__dict__.items() if k != "_loaded" and loaded.get(k, v) != v}


async def lock_rows(
    session: AsyncSession, table: Table, ids: Iterable[str], *, skip_locked: bool = False
) -> list[RowState]:
    """Whole rows by primary key `id`, locked in id order (posts before targets, as everywhere)."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    result = await session.execute(
        select(table).where(table.c.id == any_ids(wanted)).order_by(table.c.id).with_for_update(skip_locked=skip_locked)
    )
    return row_states(result)


def row_states(result: Result[Any]) -> list[RowState]:
    keys = list(result.keys())
    return [RowState(dict(zip(keys, row, strict=True))) for row in result]


async def write_changes(session: AsyncSession, table: Table, rows: Iterable[RowState]) -> None:
    """UPDATE every changed row by its `id` (`updated_at` follows, as on a flush)."""
    await update_by_id(session, table, [{"id": row.id, **changed} for row in rows if (changed := row.changes())])


async def update_by_id(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Each dict names a row's `id` and its new column values; one statement per set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if columns := tuple(sorted(k for k in row if k != "id")):
            groups.setdefault(columns, []).append(row)
    for columns, group in groups.items():
        unnest = _unnest_update(table, columns)
        if unnest is None:
            # The SET clause follows the parameters' keys; `_id` is the only name that is not a column.
            params = [{"_id": r["id"], **{c: r[c] for c in columns}} for r in group]
            await session.execute(update(table).where(table.c.id == bindparam("_id")), params)
            continue
        statement, stamps = unnest
        params = {c: [r[c] for r in group] for c in ("id", *columns)}
        if stamps:
            params["_now"] = utcnow()
        await session.execute(statement, params)


# Types asyncpg sends as plain PostgreSQL arrays (not JSON, not arrays of arrays).
_ARRAYABLE = (String, DateTime, Integer, Boolean)


@functools.cache
def _unnest_update(table: Table, columns: tuple[str, ...]) -> tuple[TextClause, bool] | None:
    """`UPDATE ... FROM unnest(ids, col1, ...)`: one execution for every row, instead of one per row.

    PostgreSQL plans and runs it once; an executemany runs the UPDATE once per row (and asyncpg encodes
    each separately). An `updated_at` with an `onupdate` is set as a flush would, once for the statement.
    """
    types = [table.c[c].type for c in columns]
    if not columns or not all(isinstance(t, _ARRAYABLE) and not isinstance(t, Enum) for t in types):
        return None
    names = ("id", *columns)
    assignments = [f'"{table.c[c].name}" = v."{c}"' for c in columns]
    stamps = "updated_at" in table.c and table.c.updated_at.onupdate is not None and "updated_at" not in columns
    if stamps:
        assignments.append('"updated_at" = :_now')
    # Unbounded element types: the assignment to the column then enforces its length (a cast to
    # varchar(n)[] would silently truncate) and no collation syntax ends up inside the cast.
    element_types = {c: _unbounded(table.c[c].type) for c in names}
    arrays = ", ".join(f"CAST(:{c} AS {element_types[c].compile(dialect=postgresql.dialect())}[])" for c in names)
    aliases = ", ".join(f'"{c}"' for c in names)
    sql = (
        f'UPDATE "{table.name}" AS t SET {", ".join(assignments)} '
        f"FROM unnest({arrays}) AS v({aliases}) WHERE t.id = v.id"
    )
    binds = [bindparam(c, type_=ARRAY(element_types[c])) for c in names]
    if stamps:
        binds.append(bindparam("_now", type_=DateTime(timezone=True)))
    return text(sql).bindparams(*binds), stamps


def _unbounded(column_type: Any) -> Any:
    """The column's type without length or collation (see `_unnest_update`)."""
    if isinstance(column_type, String):
        return Text()
    if isinstance(column_type, DateTime):
        return DateTime(timezone=column_type.timezone)
    if isinstance(column_type, Boolean):
        return Boolean()
    return BigInteger()  # Integer


async def lock_target(session: AsyncSession, target_id: str) -> PostTarget | None:
    """A target's current row, locked (take the post's lock first)."""
    return await session.scalar(
        select(PostTarget).where(PostTarget.id == target_id).with_for_update().execution_options(populate_existing=True)
    )


async def recompute_post(session: AsyncSession, post: Post) -> None:
    await recompute_posts(session, [post])


async def recompute_posts(session: AsyncSession, posts: list[Post]) -> None:
    """Re-derive each post's status from all its targets (one query for all of them)."""
    if not posts:
        return
    await session.flush()
    rows = (
        await session.execute(
            select(PostTarget.post_id, PostTarget.status, PostTarget.published_at).where(
                PostTarget.post_id == any_ids([p.id for p in posts])
            )
        )
    ).all()
    by_post: dict[str, list[Any]] = {}
    for row in rows:
        by_post.setdefault(row.post_id, []).append(row)
    for post in posts:
        apply_derived_status(post, by_post.get(post.id, []))


def apply_derived_status(post: Post, targets: Sequence[Any]) -> None:
    """Set the post's status (and publishedAt) from its targets' `status` and `published_at`."""
    post.status = derive_post_status(
        [t.status for t in targets], awaiting_approval=post.awaiting_approval, canceled=post.canceled_at is not None
    ).value
    if post.status in (PostStatus.PUBLISHED, PostStatus.PARTIALLY_PUBLISHED):
        published = [t.published_at for t in targets if t.published_at]
        post.published_at = max(published) if published else post.published_at
