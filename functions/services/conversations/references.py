"""``item_reference`` items: a caller's stored item named by ID, used in place of the
reference (as Responses input, or added to a conversation).

An item is found wherever the caller's items are stored: a conversation's items, a
response's input items, a response's output. Only the caller's own rows are searched
(the Owner scope), so an ID of someone else's item answers exactly like an unknown one.
The reference becomes a copy with a fresh ID: the original stays where it is, and a
conversation can hold the copy beside it.
"""

from __future__ import annotations

from typing import Any

from functions.common.db import Executor
from functions.common.errors import NotFound
from functions.common.principal import Owner
from functions.services.conversations.items import new_item_id

# $1..$3: the Owner scope; $4: the IDs. Each source filters its tenant columns itself.
_FIND_ITEMS = """
SELECT DISTINCT ON (id) id, item FROM (
    SELECT ci.id, ci.item, 1 AS preference
    FROM conversation_items ci JOIN conversations c ON c.id = ci.conversation_id
    WHERE ci.id = ANY($4::text[]) AND ci.organization_id = $1 AND ci.project_id = $2
      AND c.organization_id = $1 AND c.project_id = $2 AND ($3::text IS NULL OR c.user_id = $3)
  UNION ALL
    SELECT ri.id, ri.item, 2
    FROM response_input_items ri JOIN responses r ON r.id = ri.response_id
    WHERE ri.id = ANY($4::text[]) AND ri.organization_id = $1 AND ri.project_id = $2
      AND r.organization_id = $1 AND r.project_id = $2 AND ($3::text IS NULL OR r.user_id = $3)
  UNION ALL
    SELECT o.item ->> 'id', o.item, 3
    FROM responses r, jsonb_array_elements(r.output) AS o(item)
    WHERE jsonb_path_query_array(r.output, '$[*].id') ?| $4::text[]
      AND r.organization_id = $1 AND r.project_id = $2 AND ($3::text IS NULL OR r.user_id = $3)
      AND o.item ->> 'id' = ANY($4::text[])
) AS found
ORDER BY id, preference
"""


async def find_items(
    ex: Executor, *, owner: Owner, item_ids: list[str]
) -> dict[str, dict[str, Any]]:
    rows = await ex.fetch(
        _FIND_ITEMS,
        owner.organization_id,
        owner.project_id,
        owner.visible_user_id,
        item_ids,
    )
    return {row["id"]: row["item"] for row in rows}


async def resolve(
    ex: Executor, *, owner: Owner, items: list[dict[str, Any]], param: str
) -> list[dict[str, Any]]:
    """``items`` with each reference replaced by a copy of the item it names; 404 for a
    reference to nothing the caller owns."""
    wanted = [item["id"] for item in items if item["type"] == "item_reference"]
    if not wanted:
        return items
    found = await find_items(ex, owner=owner, item_ids=wanted)
    resolved = []
    for index, item in enumerate(items):
        if item["type"] != "item_reference":
            resolved.append(item)
            continue
        stored = found.get(item["id"])
        if stored is None:
            raise NotFound(f"Item with id '{item['id']}' not found.", param=f"{param}[{index}].id")
        resolved.append({**stored, "id": new_item_id(stored["type"])})
    return resolved
