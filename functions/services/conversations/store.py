"""SQL for conversations and their items. Every query is scoped by the caller's Owner.

Functions take the executor first and keyword-only arguments; the caller owns the
transaction. Lists page in SQL by `seq` (keyset): they take the caller's ``Page`` and the
cursor's ``seq`` (looked up with ``conversation_seq``/``item_seq``) and return the rows read,
up to ``page.fetch``, for ``page.answer`` to split.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from functions.common.db import Executor
from functions.common.pagination import Page
from functions.common.principal import OWNED, Owner
from functions.services.conversations.items import title_from

# Item queries: the conversation was checked against the owner first; the tenant columns
# are filtered again so no query can reach another tenant's rows.
_IN_CONVERSATION = "organization_id = $1 AND project_id = $2 AND conversation_id = $3"


def _tenant(owner: Owner, conversation_id: str) -> tuple[str, str, str]:
    return owner.organization_id, owner.project_id, conversation_id


def conversation_object(row: asyncpg.Record, *, with_title: bool = False) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "object": "conversation",
        "created_at": int(row["created_at"].timestamp()),
        "metadata": row["metadata"],
    }
    if with_title:
        out["title"] = row["title"]
    return out


async def create_conversation(
    ex: Executor,
    *,
    owner: Owner,
    conversation_id: str,
    metadata: dict[str, str],
    items: list[dict[str, Any]],
) -> asyncpg.Record:
    """Insert a conversation and its first items (call inside a transaction)."""
    row = await ex.fetchrow(
        """
        INSERT INTO conversations (id, organization_id, project_id, user_id, title, metadata)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING *
        """,
        conversation_id,
        owner.organization_id,
        owner.project_id,
        owner.user_id,
        title_from(items),
        metadata,
    )
    assert row is not None
    await _insert_item_rows(ex, owner=owner, conversation_id=conversation_id, items=items)
    return row


async def get_conversation(
    ex: Executor, *, owner: Owner, conversation_id: str, lock: bool = False
) -> asyncpg.Record | None:
    # FOR UPDATE serialises writers appending to one conversation (responses, item adds).
    suffix = " FOR UPDATE" if lock else ""
    return await ex.fetchrow(
        f"SELECT * FROM conversations WHERE {OWNED} AND id = $4{suffix}",  # noqa: S608
        *owner.scope(),
        conversation_id,
    )


async def update_metadata(
    ex: Executor, *, owner: Owner, conversation_id: str, metadata: dict[str, str]
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        f"UPDATE conversations SET metadata = $5 WHERE {OWNED} AND id = $4 RETURNING *",  # noqa: S608
        *owner.scope(),
        conversation_id,
        metadata,
    )


async def delete_conversation(ex: Executor, *, owner: Owner, conversation_id: str) -> bool:
    """Delete a conversation; its items go with it (ON DELETE CASCADE)."""
    status = await ex.execute(
        f"DELETE FROM conversations WHERE {OWNED} AND id = $4",  # noqa: S608
        *owner.scope(),
        conversation_id,
    )
    return status == "DELETE 1"


async def conversation_seq(ex: Executor, *, owner: Owner, conversation_id: str) -> int | None:
    """Where a conversation of the caller's stands in the listing (a page cursor)."""
    seq: int | None = await ex.fetchval(
        f"SELECT seq FROM conversations WHERE {OWNED} AND id = $4",  # noqa: S608
        *owner.scope(),
        conversation_id,
    )
    return seq


async def list_conversations(
    ex: Executor, *, owner: Owner, page: Page, after_seq: int | None
) -> list[asyncpg.Record]:
    """The caller's conversations by creation order after the cursor's ``seq``: up to
    ``page.fetch`` rows."""
    return await ex.fetch(
        f"""
        SELECT * FROM conversations
        WHERE {OWNED} AND ($4::bigint IS NULL OR seq {page.comparison} $4)
        ORDER BY seq {page.direction}
        LIMIT $5
        """,  # noqa: S608
        *owner.scope(),
        after_seq,
        page.fetch,
    )


async def insert_items(
    ex: Executor, *, owner: Owner, conversation_id: str, items: list[dict[str, Any]]
) -> None:
    """Append items in order, and give the conversation a title once a user speaks."""
    await _insert_item_rows(ex, owner=owner, conversation_id=conversation_id, items=items)
    title = title_from(items)
    if title is not None:
        await ex.execute(
            "UPDATE conversations SET title = $4"
            " WHERE organization_id = $1 AND project_id = $2 AND id = $3 AND title IS NULL",
            *_tenant(owner, conversation_id),
            title,
        )


async def _insert_item_rows(
    ex: Executor, *, owner: Owner, conversation_id: str, items: list[dict[str, Any]]
) -> None:
    if not items:
        return
    await ex.executemany(
        """
        INSERT INTO conversation_items (id, conversation_id, organization_id, project_id, item)
        VALUES ($1, $2, $3, $4, $5)
        """,
        [
            (item["id"], conversation_id, owner.organization_id, owner.project_id, item)
            for item in items
        ],
    )


async def item_seq(ex: Executor, *, owner: Owner, conversation_id: str, item_id: str) -> int | None:
    seq: int | None = await ex.fetchval(
        f"SELECT seq FROM conversation_items WHERE {_IN_CONVERSATION} AND id = $4",  # noqa: S608
        *_tenant(owner, conversation_id),
        item_id,
    )
    return seq


async def list_items(
    ex: Executor, *, owner: Owner, conversation_id: str, page: Page, after_seq: int | None
) -> list[dict[str, Any]]:
    """A conversation's items after the cursor's ``seq``: up to ``page.fetch`` of them."""
    rows = await ex.fetch(
        f"""
        SELECT item FROM conversation_items
        WHERE {_IN_CONVERSATION} AND ($4::bigint IS NULL OR seq {page.comparison} $4)
        ORDER BY seq {page.direction}
        LIMIT $5
        """,  # noqa: S608
        *_tenant(owner, conversation_id),
        after_seq,
        page.fetch,
    )
    return [r["item"] for r in rows]


async def recent_items(
    ex: Executor, *, owner: Owner, conversation_id: str, limit: int
) -> list[dict[str, Any]]:
    """The last `limit` items in conversation order: the history a model sees."""
    rows = await ex.fetch(
        f"""
        SELECT item FROM (
            SELECT seq, item FROM conversation_items
            WHERE {_IN_CONVERSATION} ORDER BY seq DESC LIMIT $4
        ) AS last ORDER BY seq
        """,  # noqa: S608
        *_tenant(owner, conversation_id),
        limit,
    )
    return [r["item"] for r in rows]


async def get_item(
    ex: Executor, *, owner: Owner, conversation_id: str, item_id: str
) -> dict[str, Any] | None:
    item: dict[str, Any] | None = await ex.fetchval(
        f"SELECT item FROM conversation_items WHERE {_IN_CONVERSATION} AND id = $4",  # noqa: S608
        *_tenant(owner, conversation_id),
        item_id,
    )
    return item


async def delete_item(ex: Executor, *, owner: Owner, conversation_id: str, item_id: str) -> bool:
    status = await ex.execute(
        f"DELETE FROM conversation_items WHERE {_IN_CONVERSATION} AND id = $4",  # noqa: S608
        *_tenant(owner, conversation_id),
        item_id,
    )
    return status == "DELETE 1"
