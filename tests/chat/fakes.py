"""A fake OpenAI-compatible model server: a real HTTP server (aiohttp) on a free port,
whose behaviour a test switches at will (healthy, slow, 500-ing, cutting streams or
ending them early, refusing the request, redirecting it, stopped)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web


class FakeUpstream:
    def __init__(self, name: str, *, models: tuple[str, ...] = ("m1",)) -> None:
        self.name = name
        self.models = models
        self.mode = "ok"  # ok | slow | fail500 | busy | refuse400 | cut | nodone | redirect
        self.redirect_to = ""  # where mode "redirect" sends every request (a 307)
        self.delay = 0.0
        self.chunk_delay = 0.0
        self.stream_chunks = 3
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnects = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, request: web.Request) -> web.Response:
        if self.mode == "fail500":
            return web.json_response({"error": {"message": "down"}}, status=500)
        data = [
            {"id": m, "object": "model", "created": 1, "owned_by": self.name} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _embeddings(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.bodies.append(await request.json())
        return web.json_response(
            {
                "object": "list",
                "model": self.models[0],
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.json()
        self.bodies.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.mode == "fail500":
            return web.json_response({"error": {"message": "engine crashed"}}, status=500)
        if self.mode == "redirect":
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.path_qs)
        if self.mode == "busy":
            return web.json_response(
                {"error": {"message": "queue full"}}, status=503, headers={"Retry-After": "3"}
            )
        if self.mode == "refuse400":
            return web.json_response(
                {"object": "error", "message": "This model's maximum context length is 8 tokens."},
                status=400,
            )
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        if body.get("stream"):
            return await self._stream(request, body)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "served_by": self.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"hi from {self.name}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
            }
        )

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        def chunk(content: str, finish: str | None = None) -> bytes:
            return event(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "delta": {"content": content}, "finish_reason": finish}
                    ],
                }
            )

        try:
            for i in range(self.stream_chunks):
                await response.write(chunk(f"{self.name}-{i} "))
                if self.mode == "cut" and i == 1:
                    assert request.transport is not None
                    request.transport.close()  # drop the connection mid-stream
                    return response
                if self.mode == "nodone" and i == 1:
                    await response.write_eof()  # a clean end, but without [DONE]
                    return response
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            await response.write(chunk("", "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
                await response.write(
                    event(
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion.chunk",
                            "choices": [],
                            "usage": usage,
                        }
                    )
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
