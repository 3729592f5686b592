"""Web search through Serper (Google results, ``SERPER_API_KEY``) or a self-hosted SearXNG.

Both providers' answers are normalised to one shape, ``{"provider", "query", "results":
[{"position", "title", "link", "snippet", "date"?}], ...extras}``. Every failure of the
provider (down, slow, rejecting our key, answering garbage) becomes a ToolError the model
can read; nothing of the key ever appears in a message.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from functions.common.settings import Settings
from functions.services.toolbox.base import ToolError

# Google's `tbs` time filters that SearXNG's `time_range` can express.
_TIME_RANGES = {"qdr:h": "day", "qdr:d": "day", "qdr:w": "week", "qdr:m": "month", "qdr:y": "year"}
_SERPER_EXTRAS = {
    "answerBox": "answer_box",
    "knowledgeGraph": "knowledge_graph",
    "peopleAlsoAsk": "people_also_ask",
    "relatedSearches": "related_searches",
}


class SearchArgs(BaseModel):
    """The original Jan Server's `google_search` arguments."""

    model_config = ConfigDict(extra="ignore")

    q: str = Field(min_length=1, max_length=2048)
    gl: str | None = Field(None, max_length=16)
    hl: str | None = Field(None, max_length=16)
    location: str | None = Field(None, max_length=256)
    num: int | None = Field(None, ge=1, le=100)
    page: int | None = Field(None, ge=1, le=100)
    tbs: str | None = Field(None, max_length=256)
    autocorrect: bool | None = None


SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "q": {"type": "string", "description": "The search query."},
        "gl": {"type": "string", "description": "Country of the results, e.g. 'us', 'de'."},
        "hl": {"type": "string", "description": "Interface language, e.g. 'en', 'fr'."},
        "location": {"type": "string", "description": "Where to search from, e.g. 'Paris'."},
        "num": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Results."},
        "page": {"type": "integer", "minimum": 1, "description": "Result page, from 1."},
        "tbs": {
            "type": "string",
            "description": "Time filter: qdr:h (hour), qdr:d, qdr:w, qdr:m, qdr:y.",
        },
        "autocorrect": {"type": "boolean", "description": "Let the engine correct spelling."},
    },
    "required": ["q"],
}


async def web_search(
    client: httpx.AsyncClient, settings: Settings, args: SearchArgs
) -> dict[str, Any]:
    """Search with SearXNG when SEARXNG_URL is set, else Serper; ToolError if neither is."""
    if settings.searxng_url:
        return await _searxng(client, settings.searxng_url, args)
    if settings.serper_api_key is not None:
        key = settings.serper_api_key.get_secret_value()
        return await _serper(client, settings.serper_url, key, args)
    raise ToolError(
        "Web search is not configured on this server (no SERPER_API_KEY or SEARXNG_URL)."
    )


async def _serper(
    client: httpx.AsyncClient, base: str, key: str, args: SearchArgs
) -> dict[str, Any]:
    # Every argument given is forwarded under its own name (the original dropped `tbs`).
    body = args.model_dump(exclude_none=True)
    data = await _call(
        client, "POST", f"{base.rstrip('/')}/search", json=body, headers={"X-API-KEY": key}
    )
    results = [
        _result(i, item.get("title"), item.get("link"), item.get("snippet"), item.get("date"))
        for i, item in enumerate(_list(data.get("organic")), start=1)
    ]
    out: dict[str, Any] = {"provider": "serper", "query": args.q, "results": results}
    for theirs, ours in _SERPER_EXTRAS.items():
        if data.get(theirs):
            out[ours] = data[theirs]
    return out


async def _searxng(client: httpx.AsyncClient, base: str, args: SearchArgs) -> dict[str, Any]:
    params: dict[str, str | int] = {"q": args.q, "format": "json"}
    if args.page:
        params["pageno"] = args.page
    if args.hl:
        params["language"] = f"{args.hl}-{args.gl.upper()}" if args.gl else args.hl
    if args.tbs and args.tbs in _TIME_RANGES:
        params["time_range"] = _TIME_RANGES[args.tbs]
    # SearXNG has no location, result count or autocorrect switch: num is applied here.
    data = await _call(client, "GET", f"{base.rstrip('/')}/search", params=params)
    items = _list(data.get("results"))[: args.num or 10]
    results = [
        _result(
            i, item.get("title"), item.get("url"), item.get("content"), item.get("publishedDate")
        )
        for i, item in enumerate(items, start=1)
    ]
    out: dict[str, Any] = {"provider": "searxng", "query": args.q, "results": results}
    if data.get("answers"):
        out["answers"] = data["answers"]
    if data.get("infoboxes"):
        out["infoboxes"] = data["infoboxes"]
    return out


async def _call(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise ToolError("The search provider did not answer in time.") from exc
    except httpx.HTTPError as exc:
        raise ToolError(
            f"The search provider could not be reached ({type(exc).__name__})."
        ) from exc
    if response.status_code in (401, 403):
        raise ToolError("The search provider refused this server's credentials.")
    if response.status_code == 429:
        raise ToolError("The search provider is rate limiting this server; try again later.")
    if response.status_code >= 400:
        raise ToolError(f"The search provider failed (HTTP {response.status_code}).")
    try:
        data = response.json()
    except ValueError as exc:
        raise ToolError("The search provider answered with something other than JSON.") from exc
    if not isinstance(data, dict):
        raise ToolError("The search provider answered in an unexpected shape.")
    return data


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _result(position: int, title: Any, link: Any, snippet: Any, date: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "position": position,
        "title": str(title or ""),
        "link": str(link or ""),
        "snippet": str(snippet or ""),
    }
    if date:
        result["date"] = str(date)
    return result


def render_results(found: dict[str, Any]) -> str:
    """The text form the model reads: a numbered list, answer box first when there is one."""
    lines: list[str] = []
    answer = found.get("answer_box")
    if isinstance(answer, dict) and (answer.get("answer") or answer.get("snippet")):
        lines.append(f"Answer: {answer.get('answer') or answer.get('snippet')}\n")
    for text in found.get("answers", []):
        lines.append(f"Answer: {text}\n")
    if not found["results"]:
        lines.append(f"No results for {found['query']!r}.")
    for r in found["results"]:
        date = f" ({r['date']})" if r.get("date") else ""
        lines.append(f"{r['position']}. {r['title']}{date}\n   {r['link']}\n   {r['snippet']}")
    return "\n".join(lines)
