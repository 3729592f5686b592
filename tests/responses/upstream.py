"""A scripted OpenAI-compatible chat-completions server on a real port, for tests.

Each request takes the next scripted ``Reply`` (or, with none left, echoes the last user
message) and answers as a stream (or plain JSON) the way vLLM and llama.cpp do, with
token log probabilities when asked. Every request body is kept in ``requests`` so tests
can check what the model was shown.

``/tokenize`` (at the server's root) answers as vLLM's does: ``count`` (``prompt_tokens``:
four per message plus one per word of its content, plus one per ten bytes of the tools)
and ``max_model_len`` (``context_window``); with ``tokenizer`` false it is a 404, as on a
server without one. Its requests are kept in ``tokenized``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.pg import free_port

MODEL = "scripted-model"
CONTEXT_WINDOW = 4096


def prompt_tokens(body: dict[str, Any]) -> int:
    """The scripted tokenizer's count of a chat request's prompt."""
    count = 0
    for message in body.get("messages") or ():
        content = message.get("content")
        text = content if isinstance(content, str) else orjson.dumps(content or "").decode()
        count += 4 + len(text.split())
    if body.get("tools"):
        count += len(orjson.dumps(body["tools"])) // 10
    return count


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments)
    finish_reason: str | None = None
    status: int = 200
    error: str = "scripted failure"
    delay: float = 0.0  # seconds between chunks
    break_after: int | None = None  # cut the stream after this many chunks


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.streams_closed = 0
        self.tokenized: list[dict[str, Any]] = []
        self.tokenizer = True
        self.tokenizer_states_window = True  # False: llama.cpp's server (``tokens`` only)
        self.context_window = CONTEXT_WINDOW
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", ws="none"
        )
        self.server = uvicorn.Server(config)

    def reset(self) -> None:
        self.script.clear()
        self.requests.clear()
        self.streams_closed = 0
        self.tokenized.clear()
        self.tokenizer = True
        self.tokenizer_states_window = True
        self.context_window = CONTEXT_WINDOW

    async def _tokenize(self, request: Request) -> Response:
        if not self.tokenizer:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = orjson.loads(await request.body())
        self.tokenized.append(body)
        count = prompt_tokens(body)
        if not self.tokenizer_states_window:
            return JSONResponse({"tokens": list(range(count))})
        return JSONResponse(
            {"count": count, "max_model_len": self.context_window, "tokens": list(range(count))}
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": MODEL,
                        "object": "model",
                        "owned_by": "test",
                        "max_model_len": self.context_window,  # as vLLM states it
                    }
                ],
            }
        )

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        reply = self.script.popleft() if self.script else self._echo(body)
        if reply.status != 200:
            return JSONResponse(
                {"error": {"message": reply.error, "type": "invalid_request_error"}},
                status_code=reply.status,
            )
        if not body.get("stream"):
            return JSONResponse(self._completion(body, reply))
        return StreamingResponse(self._stream(body, reply), media_type="text/event-stream")

    def _echo(self, body: dict[str, Any]) -> Reply:
        users = [m for m in body["messages"] if m["role"] == "user"]
        return Reply(text=f"echo: {users[-1]['content'] if users else ''}")

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason or "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    async def _stream(self, body: dict[str, Any], reply: Reply) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            if body.get("logprobs") and delta.get("content"):
                top = body.get("top_logprobs") or 0
                token = delta["content"]
                alternatives = [
                    {"token": f"alt{n}", "logprob": -2.0 - n, "bytes": list(f"alt{n}".encode())}
                    for n in range(top)
                ]
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": token,
                            "logprob": -0.5,
                            "bytes": list(token.encode()),
                            "top_logprobs": alternatives,
                        }
                    ]
                }
            data = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [choice],
            }
            return b"data: " + orjson.dumps(data) + b"\n\n"

        pieces = [chunk({"role": "assistant", "content": ""})]
        words = reply.text.split(" ")
        pieces += [
            chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words) if reply.text
        ]
        for n, (name, arguments) in enumerate(reply.tool_calls):
            half = len(arguments) // 2
            first = {"index": n, "id": f"call_{n}", "type": "function"}
            pieces.append(
                chunk(
                    {
                        "tool_calls": [
                            {**first, "function": {"name": name, "arguments": arguments[:half]}}
                        ]
                    }
                )
            )
            pieces.append(
                chunk({"tool_calls": [{"index": n, "function": {"arguments": arguments[half:]}}]})
            )
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        pieces.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": 10,
                "completion_tokens": len(words),
                "total_tokens": 10 + len(words),
            }
            pieces.append(
                b"data: "
                + orjson.dumps({"id": "chatcmpl-1", "choices": [], "usage": usage})
                + b"\n\n"
            )
        pieces.append(b"data: [DONE]\n\n")
        try:
            for n, piece in enumerate(pieces):
                if reply.break_after is not None and n >= reply.break_after:
                    return
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                yield piece
        finally:
            self.streams_closed += 1

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        await self._task

    async def __aenter__(self) -> ScriptedUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
