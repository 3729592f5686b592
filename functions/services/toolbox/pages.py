"""The `scrape` / `fetch_webpage` tools: a page as readable text or Markdown."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from functions.common.netguard import AddressPolicy
from functions.services.toolbox.base import TRUNCATION_NOTE, ToolError, ToolResult
from functions.services.toolbox.fetch import fetch_page
from functions.services.toolbox.readable import html_to_readable

_HTML = ("text/html", "application/xhtml+xml")
_TEXT_LIKE = ("application/json", "application/xml", "application/javascript")


class PageArgs(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    url: str = Field(min_length=1, max_length=8192)
    # The original's camelCase name; None means the tool's own default.
    include_markdown: bool | None = Field(None, alias="includeMarkdown")


def page_schema(*, default_markdown: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "The http(s) URL of the page."},
            "includeMarkdown": {
                "type": "boolean",
                "default": default_markdown,
                "description": "Return Markdown (links, headings, lists) instead of plain text.",
            },
        },
        "required": ["url"],
    }


async def read_page(
    client: httpx.AsyncClient,
    args: PageArgs,
    *,
    policy: AddressPolicy,
    max_bytes: int,
    default_markdown: bool,
) -> ToolResult:
    page = await fetch_page(client, args.url, policy=policy, max_bytes=max_bytes)
    markdown = default_markdown if args.include_markdown is None else args.include_markdown
    title: str | None = None
    if page.content_type in _HTML:
        # Without a declared charset, let BeautifulSoup sniff the bytes (<meta charset>).
        # Off the event loop: a 2 MB page (the default fetch cap) takes about 3 s of CPU
        # to parse and convert, which would stall every request this process serves.
        readable = await run_in_threadpool(
            html_to_readable,
            page.text() if page.charset else page.body,
            markdown=markdown,
            base_url=page.url,
        )
        title, content = readable.title, readable.content
    elif page.content_type.startswith("text/") or page.content_type in _TEXT_LIKE:
        content = page.text()
    else:
        raise ToolError(
            f"{args.url} is {page.content_type or 'of an unknown type'}, not a page with text."
        )
    if page.truncated:
        content += TRUNCATION_NOTE
    structured: dict[str, Any] = {
        "url": args.url,
        "final_url": page.url,
        "title": title,
        "content_type": page.content_type,
        "format": "markdown" if markdown and page.content_type in _HTML else "text",
        "truncated": page.truncated,
        "content": content,
    }
    header = f"Title: {title}\n" if title else ""
    return ToolResult(text=f"{header}URL: {page.url}\n\n{content}", structured=structured)
