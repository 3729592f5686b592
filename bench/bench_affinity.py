"""Prompt-cache hit rate of Responses conversations over three endpoints, without and with
the router's affinity.

    .venv/bin/python bench/bench_affinity.py [conversations] [turns]   (default 12, 10)

(From a worktree whose ``functions`` the virtual environment does not install, prefix
``PYTHONPATH=.``.)

Three local upstreams simulate an engine's prefix cache: each remembers the prompts it
has processed (with the answer it gave), and a request whose prompt extends one of them
is a hit — it only prefills the new turn (``HIT_MS``) — while any other request
recomputes the whole conversation (``MISS_MS`` plus ``PER_MESSAGE_MS`` per message). The
gateway (the whole app in-process over ASGI, on a migrated scratch database at
``JAN_TEST_PG_DSN``) routes to one provider listing the three endpoints. Each
conversation is a ``previous_response_id`` chain of ``turns`` Responses; the
conversations run concurrently.

- ``no affinity``: the router's affinity is switched off (``Router.pick`` gets no key), as
  Responses chains routed before: least outstanding requests, ties taken in turn.
- ``affinity``: as shipped: the chain keeps its first response's key, the router hashes
  it to one endpoint (rendezvous), and forwards it as ``x-session-id``.

The first turn of a conversation can never hit, so the best possible hit rate is
(turns - 1) / turns. One conversation alone, then ``conversations`` at once (the router
may move one off its endpoint when that endpoint is busier than the least busy by more
than ``AFFINITY_SLACK``). Reports the hit rate, the upstreams' simulated prefill time per turn,
and how many conversations stayed on one endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
from aiohttp import web
from pydantic import SecretStr

from functions.app import create_app
from functions.common import migrate
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference.health import Endpoint
from functions.services.inference.router import Router
from tests.factories import create_tenant

MODEL = "bench-model"
HIT_MS = 2.0
MISS_MS = 2.0
PER_MESSAGE_MS = 1.5


def digest(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(orjson.dumps(messages)).hexdigest()


class PrefixCacheUpstream:
    """An OpenAI-compatible endpoint with a simulated prefix cache."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cached: set[str] = set()
        self.hits = self.misses = 0
        self.prefill_ms = 0.0
        self.sessions: set[str] = set()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        self.cached.clear()
        self.sessions.clear()
        self.hits = self.misses = 0
        self.prefill_ms = 0.0

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages = body["messages"]
        session = request.headers.get("x-session-id")
        if session:
            self.sessions.add(session)
        # A hit: the prompt before the new user message was processed here (with the
        # answer this endpoint gave), so its KV cache is reused.
        if len(messages) > 1 and digest(messages[:-1]) in self.cached:
            self.hits += 1
            ms = HIT_MS
        else:
            self.misses += 1
            ms = MISS_MS + PER_MESSAGE_MS * len(messages)
        self.prefill_ms += ms
        await asyncio.sleep(ms / 1000)
        text = f"answer {len(messages)} from {self.name}"
        self.cached.add(digest([*messages, {"role": "assistant", "content": text}]))
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
        delta = {"role": "assistant", "content": text}
        await response.write(
            event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        )
        await response.write(
            event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        )
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        await response.write(event({**base, "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def scratch_runtime() -> AsyncIterator[Runtime]:
    admin_dsn = os.environ.get("JAN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"jan_bench_affinity_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    runtime = None
    try:
        dsn = admin_dsn.rpartition("/")[0] + "/" + name
        conn = await asyncpg.connect(dsn)
        await migrate.apply(conn)
        await conn.close()
        values: dict[str, Any] = {
            "db_postgresql_write_dsn": SecretStr(dsn),
            "jwt_secret": SecretStr("bench-jwt-secret-0123456789abcdef0123456789"),
            "apikey_secret": SecretStr("bench-apikey-secret-0123456789abcdef"),
            "model_provider_secret": SecretStr("bench-provider-secret-0123456789abcdef"),
            "jan_function": "all",
            "jan_migrate_on_start": False,
            "jan_provider_allowed_hosts": ("127.0.0.1",),
            "jan_log_level": "WARNING",
        }
        runtime = Runtime(Settings(**values))
        yield runtime
    finally:
        if runtime is not None:
            await runtime.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def conversation(
    client: httpx.AsyncClient, headers: dict[str, str], turns: int, n: int
) -> None:
    previous = None
    for turn in range(turns):
        body: dict[str, Any] = {"model": MODEL, "input": f"conversation {n}, turn {turn}"}
        if previous is not None:
            body["previous_response_id"] = previous
        r = await client.post("/v1/responses", json=body, headers=headers)
        assert r.status_code == 200, r.text
        previous = r.json()["id"]


async def measure(
    label: str,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    ups: list[PrefixCacheUpstream],
    conversations: int,
    turns: int,
) -> None:
    for up in ups:
        up.reset()
    started = time.perf_counter()
    await asyncio.gather(*(conversation(client, headers, turns, n) for n in range(conversations)))
    wall = time.perf_counter() - started
    hits = sum(u.hits for u in ups)
    total = hits + sum(u.misses for u in ups)
    prefill = sum(u.prefill_ms for u in ups)
    sessions: set[str] = set().union(*(u.sessions for u in ups))
    spread = [sum(s in u.sessions for u in ups) for s in sessions]
    sticky = f"{sum(1 for c in spread if c == 1)}/{len(spread)}"
    print(
        f"| {label} | {conversations}x{turns} | {hits}/{total} = {hits / total:.0%} "
        f"| {prefill / total:.1f} | {sticky} | {[u.hits + u.misses for u in ups]} "
        f"| {wall:.1f} |"
    )


async def compare(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    ups: list[PrefixCacheUpstream],
    conversations: int,
    turns: int,
) -> None:
    pick = Router.pick

    def without_affinity(
        self: Router, route: Any, tried: list[Endpoint], affinity: str | None
    ) -> Endpoint | None:
        return pick(self, route, tried, None)

    Router.pick = without_affinity  # type: ignore[method-assign]
    try:
        await measure("no affinity", client, headers, ups, conversations, turns)
    finally:
        Router.pick = pick  # type: ignore[method-assign]
    await measure("affinity", client, headers, ups, conversations, turns)


async def main(conversations: int, turns: int) -> None:
    ups = [PrefixCacheUpstream(f"e{n}") for n in range(3)]
    for up in ups:
        await up.start()
    try:
        async with scratch_runtime() as runtime:
            app = create_app(runtime)
            await runtime.open()
            tenant = await create_tenant(runtime)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", timeout=60
            ) as client:
                body = {
                    "name": "pool",
                    "kind": "vllm",
                    "base_urls": [u.base_url for u in ups],
                }
                r = await client.post(
                    "/v1/organization/models/providers", json=body, headers=tenant.admin_headers
                )
                assert r.status_code == 200, r.text
                print(
                    f"best possible hit rate: {turns - 1}/{turns} per conversation; "
                    f"prefill: hit {HIT_MS} ms, miss {MISS_MS} ms + {PER_MESSAGE_MS} ms "
                    "per message"
                )
                print(
                    "| routing | conversations x turns | prefix-cache hits | mean prefill ms "
                    "| sessions on one endpoint | requests per endpoint | wall s |"
                )
                print("|---|---|---|---|---|---|---|")
                for count in dict.fromkeys((1, conversations)):
                    await compare(client, tenant.project_headers, ups, count, turns)
    finally:
        for up in ups:
            await up.stop()


if __name__ == "__main__":
    given = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*given, *(12, 10)[len(given) :]))
