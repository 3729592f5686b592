"""SQL for stored chat completions. Every query is scoped by the caller's Owner (users see
their own, project keys their whole project); lists page by ``seq`` (keyset)."""

from __future__ import annotations

from typing import Any

import asyncpg

from functions.common.db import Executor
from functions.common.pagination import Page
from functions.common.principal import OWNED, Owner

_INSERT = """
    INSERT INTO chat_completions
        (id, organization_id, project_id, user_id, api_key_id, model, metadata,
         completion, messages)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


def row(
    *, owner: Owner, completion: dict[str, Any], messages: list[Any], metadata: dict[str, str]
) -> tuple[Any, ...]:
    """The arguments of one row for ``insert_many``."""
    return (
        completion["id"],
        owner.organization_id,
        owner.project_id,
        owner.user_id,
        owner.api_key_id,
        str(completion.get("model") or ""),
        metadata,
        completion,
        messages,
    )


async def insert_many(ex: Executor, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows made by ``row``, all or none (one transaction, one round trip)."""
    await ex.executemany(_INSERT, rows)


async def get(ex: Executor, *, owner: Owner, completion_id: str) -> asyncpg.Record | None:
    return await ex.fetchrow(
        f"SELECT * FROM chat_completions WHERE {OWNED} AND id = $4",  # noqa: S608
        *owner.scope(),
        completion_id,
    )


async def seq_of(ex: Executor, *, owner: Owner, completion_id: str) -> int | None:
    seq: int | None = await ex.fetchval(
        f"SELECT seq FROM chat_completions WHERE {OWNED} AND id = $4",  # noqa: S608
        *owner.scope(),
        completion_id,
    )
    return seq


async def listing(
    ex: Executor,
    *,
    owner: Owner,
    page: Page,
    after_seq: int | None,
    model: str | None,
    metadata: dict[str, str],
) -> list[asyncpg.Record]:
    return await ex.fetch(
        f"""
        SELECT * FROM chat_completions
        WHERE {OWNED}
          AND ($4::bigint IS NULL OR seq {page.comparison} $4)
          AND ($5::text IS NULL OR model = $5)
          AND metadata @> $6
        ORDER BY seq {page.direction}
        LIMIT $7
        """,  # noqa: S608
        *owner.scope(),
        after_seq,
        model,
        metadata,
        page.fetch,
    )


async def update_metadata(
    ex: Executor, *, owner: Owner, completion_id: str, metadata: dict[str, str]
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        f"UPDATE chat_completions SET metadata = $5 WHERE {OWNED} AND id = $4 RETURNING *",  # noqa: S608
        *owner.scope(),
        completion_id,
        metadata,
    )


async def delete(ex: Executor, *, owner: Owner, completion_id: str) -> bool:
    deleted = await ex.fetchval(
        f"DELETE FROM chat_completions WHERE {OWNED} AND id = $4 RETURNING true",  # noqa: S608
        *owner.scope(),
        completion_id,
    )
    return bool(deleted)
