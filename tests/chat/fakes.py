"""A fake OpenAI-compatible model server: a real HTTP server (aiohttp) on a free port,
whose behaviour a test switches at will (healthy, slow, 500-ing, cutting streams or
ending them early, refusing the request, redirecting it, stopped, reporting any usage,
flooding the gateway with an endless event or a huge body)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from tests.chat.media_fakes import Media


class FakeUpstream:
    def __init__(self, name: str, *, models: tuple[str, ...] = ("m1",)) -> None:
        self.name = name
        self.models = models
        # ok | slow | fail500 | busy | refuse400 | cut | nodone | redirect | flood | huge
        # | broken (lists its models, 500s every completion) | too_long (refuses the
        # request for its context window as llama.cpp's server does, n_ctx 16)
        # | refuse_envelope (a 400 in OpenAI's envelope, ``refusal`` its error object)
        self.mode = "ok"
        self.redirect_to = ""  # where mode "redirect" sends every request (a 307)
        self.refusal: dict[str, Any] = {
            "message": "'dimensions' must be between 1 and 256.",
            "type": "invalid_request_error",
            "param": "dimensions",
            "code": "invalid_value",
        }
        self.usage: dict[str, Any] = {
            "prompt_tokens": 7,
            "completion_tokens": 5,
            "total_tokens": 12,
        }
        # Mode "flood": a stream, after ``flood_after`` normal chunks, sends ``big`` bytes of
        # one event that never ends. Mode "huge": a reply and the /models answer are
        # ``big`` bytes of JSON, chunked (or with their Content-Length when ``sized``), a
        # piece every ``chunk_delay`` seconds.
        self.big = 0
        self.flood_after = 0
        self.sized = False
        self.sent = 0  # bytes of flood or huge body written before the reader stopped
        self.delay = 0.0
        self.chunk_delay = 0.0
        self.stream_chunks = 3
        self.chunks_by_model: dict[str, int] = {}  # a stream of these models: this many chunks
        self.delay_by_model: dict[str, float] = {}  # these models answer after this long
        self.calls = 0
        self.model_lists = 0  # /models answered (discovery polls and health probes)
        # Until this time.monotonic() every request answers 503 "model not ready", as a
        # KServe predictor does while it loads (or queue-proxy while it scales from zero).
        self.cold_until = 0.0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        # Context windows /models states (vLLM's max_model_len), by model.
        self.windows: dict[str, int] = {}
        self.disconnects = 0
        self.media = Media()  # audio, images, moderations, rerank and score
        self.tokenized: list[dict[str, Any]] = []  # /tokenize requests, as vLLM's
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)  # answered in its own shape
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/tokenize", self._tokenize)
        self.media.routes(app)
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

    async def _huge(self, request: web.Request, head: bytes) -> web.StreamResponse:
        """``big`` bytes of a JSON object (``head`` first), written 64 KiB at a time from
        one buffer, so the fake itself stays small however much it sends."""
        piece = b'{"id":"' + b"x" * 65_500 + b'"},'
        tail = b'{"id":"end"}]}'
        count = max(1, (self.big - len(head) - len(tail)) // len(piece))
        headers = {"content-type": "application/json"}
        if self.sized:
            headers["content-length"] = str(len(head) + count * len(piece) + len(tail))
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        try:
            await response.write(head)
            for _ in range(count):
                await response.write(piece)
                self.sent += len(piece)
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            await response.write(tail)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    def _cold(self) -> web.Response | None:
        if time.monotonic() >= self.cold_until:
            return None
        return web.json_response(
            {"error": {"message": "model is not ready", "code": "model_not_ready"}},
            status=503,
            headers={"Retry-After": "0.2"},
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.model_lists += 1
        if (cold := self._cold()) is not None:
            return cold
        if self.mode == "huge":
            return await self._huge(request, b'{"object":"list","data":[')
        if self.mode == "fail500":
            return web.json_response({"error": {"message": "down"}}, status=500)
        data: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": 1, "owned_by": self.name} for m in self.models
        ]
        for model in data:
            if model["id"] in self.windows:
                model["max_model_len"] = self.windows[model["id"]]
        return web.json_response({"object": "list", "data": data})

    async def _tokenize(self, request: web.Request) -> web.Response:
        """vLLM's tokenizer: three tokens per message and one per word of its content."""
        body = await request.json()
        self.tokenized.append(body)
        count = sum(3 + len(str(m.get("content") or "").split()) for m in body["messages"])
        return web.json_response(
            {"count": count, "max_model_len": 2048, "tokens": list(range(count))}
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.bodies.append(await request.json())
        if self.mode == "refuse_envelope":
            return web.json_response({"error": self.refusal}, status=400)
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
        if (cold := self._cold()) is not None:
            return cold
        if self.mode in ("fail500", "broken"):
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
        if self.mode == "too_long":
            error = {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_ctx": 16,
            }
            return web.json_response({"error": error}, status=400)
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        elif pause := self.delay_by_model.get(str(body.get("model"))):
            await asyncio.sleep(pause)
        if body.get("stream"):
            return await self._stream(request, body)
        if self.mode == "huge":
            return await self._huge(request, b'{"object":"chat.completion","choices":[')
        text = f"hi from {self.name}"
        if request.path.endswith("/chat/completions"):
            message = {"role": "assistant", "content": text, "refusal": None}
            choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
            kind = "text_completion"
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": kind,
                "created": int(time.time()),
                "model": body.get("model"),
                "served_by": self.name,
                "choices": [{**choice, "finish_reason": "stop"}],
                "usage": self.usage,
            }
        )

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        created = int(time.time())

        def chunk(content: str, finish: str | None = None) -> bytes:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": content},
                "finish_reason": finish,
            }
            if body.get("logprobs") and content:  # as vLLM sends them, when asked
                top = [
                    {"token": f"t{n}", "logprob": -1.0 - n, "bytes": [116, 48 + n]}
                    for n in range(body.get("top_logprobs") or 0)
                ]
                entry = {"token": content, "logprob": -0.25, "bytes": list(content.encode())}
                choice["logprobs"] = {"content": [{**entry, "top_logprobs": top}], "refusal": None}
            return event(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [choice],
                }
            )

        try:
            for i in range(self.chunks_by_model.get(str(body.get("model")), self.stream_chunks)):
                if self.mode == "flood" and i == self.flood_after:
                    await self._flood(response)
                    return response
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
                await response.write(
                    event(
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": body.get("model"),
                            "choices": [],
                            "usage": self.usage,
                        }
                    )
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    async def _flood(self, response: web.StreamResponse) -> None:
        """One event of ``big`` bytes without an end (lines, never a blank one)."""
        await response.write(b'data: {"choices":[{"delta":{"content":"')
        piece = b"y" * 65_535 + b"\n"
        while self.sent < self.big:
            await response.write(piece)
            self.sent += len(piece)
        await response.write_eof()
