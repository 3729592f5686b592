"""A real HTTP server on 127.0.0.1 and a free port, in the test's own event loop.

Used to stand in for Serper, SearXNG, web pages and a model upstream, and to serve the
real app to the official MCP client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

from functions.app import create_app
from functions.common.runtime import Runtime


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends (on ``port``, else a free one); yields its base
    URL (``http://127.0.0.1:PORT``)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        ws="none",
        http="h11",
        log_level="error",
        timeout_graceful_shutdown=1,  # a test page that sleeps must not hold up teardown
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve_app(runtime: Runtime, port: int = 0) -> AsyncIterator[str]:
    """The whole Jan app on a real port, its runtime opened as a function instance's is:
    for the official SDKs, and for clients that hang up mid-stream (ASGITransport buffers)."""
    app = create_app(runtime)
    await runtime.open()
    async with serve(app, port) as base:
        yield base
