from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.responses.upstream import MODEL


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> Any:
    r = await client.post("/v1/responses", json={"model": MODEL, **body}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def sse_events(text: str) -> list[dict[str, Any]]:
    """Parse an SSE body; each event's `event:` line must match its data's type."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = orjson.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append(data)
    return events
