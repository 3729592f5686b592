"""Local stand-ins for the outside world: web pages, Serper and SearXNG, and the fixtures
that serve them on real ports (`site`: the pages' base URL; `serper`: the fake and its URL),
offered by the tools and MCP suites' conftest files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from tests.tools.http_server import serve

ARTICLE = """<!doctype html><html><head><title>Jan tools</title>
<style>body{color:red}</style><script>alert(1)</script></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<main><h1>Server-side tools</h1>
<p>Jan runs <b>web search</b> and <a href="/docs/fetch">page fetching</a> itself.</p>
<ul><li>google_search</li><li>fetch_webpage</li></ul></main>
<footer>© Jan</footer></body></html>"""


async def _article(request: Request) -> Response:
    return HTMLResponse(ARTICLE)


async def _hop(request: Request) -> Response:
    n = int(request.path_params["n"])
    return RedirectResponse("/article" if n == 0 else f"/hop/{n - 1}", status_code=302)


async def _huge(request: Request) -> Response:
    return PlainTextResponse("x" * (1024 * 1024))


async def _slow(request: Request) -> Response:
    await asyncio.sleep(10)
    return PlainTextResponse("too late")


async def _to(request: Request) -> Response:
    return RedirectResponse(request.query_params["url"], status_code=307)


async def _binary(request: Request) -> Response:
    return Response(b"\x89PNG....", media_type="image/png")


async def _missing(request: Request) -> Response:
    return PlainTextResponse("nope", status_code=404)


PAGES = Starlette(
    routes=[
        Route("/article", _article),
        Route("/hop/{n:int}", _hop),
        Route("/huge", _huge),
        Route("/slow", _slow),
        Route("/to", _to),
        Route("/image", _binary),
        Route("/missing", _missing),
    ]
)


SERPER_KEY = "serper-test-key-123"


class FakeSerper:
    """POST /search with X-API-KEY, answering like google.serper.dev."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.fail_with: int | None = None
        self.app = Starlette(routes=[Route("/search", self.search, methods=["POST"])])

    async def search(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        if self.fail_with is not None:
            return PlainTextResponse("upstream trouble", status_code=self.fail_with)
        if request.headers.get("x-api-key") != SERPER_KEY:
            return JSONResponse({"message": "Unauthorized."}, status_code=403)
        return JSONResponse(
            {
                "searchParameters": {**body, "type": "search", "engine": "google"},
                "answerBox": {"answer": "Jan Server is self-hosted."},
                "organic": [
                    {
                        "title": "Jan Server",
                        "link": "https://jan.ai/server",
                        "snippet": "Self-hosted OpenAI-compatible platform.",
                        "position": 1,
                        "date": "Jan 2, 2026",
                    },
                    {"title": "Jan on GitHub", "link": "https://github.com/janhq", "position": 2},
                ],
                "relatedSearches": [{"query": "jan ai"}],
            }
        )


class FakeSearxng:
    """GET /search?format=json, answering like a SearXNG instance."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/search", self.search)])

    async def search(self, request: Request) -> Response:
        self.queries.append(dict(request.query_params))
        results = [
            {"title": f"Result {i}", "url": f"https://example.org/{i}", "content": f"about {i}"}
            for i in range(1, 8)
        ]
        results[0]["publishedDate"] = "2026-01-02T00:00:00"
        return JSONResponse({"query": request.query_params["q"], "results": results})


@pytest.fixture
async def site() -> AsyncIterator[str]:
    async with serve(PAGES) as base:
        yield base


@pytest.fixture
async def serper() -> AsyncIterator[tuple[FakeSerper, str]]:
    fake = FakeSerper()
    async with serve(fake.app) as base:
        yield fake, base
