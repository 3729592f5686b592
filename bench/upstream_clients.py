"""Which upstream client costs least CPU per proxied request? (feeds the choice in
functions/common/upstream.py). Sends the same POST to the mock upstream at a fixed
concurrency with httpx's default transport, httpx over aiohttp (httpx-aiohttp), and
aiohttp directly, and prints process CPU time per request for each.

Usage: python bench/upstream_clients.py http://127.0.0.1:9311 [requests] [concurrency]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

BODY = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"content-type": "application/json"}


async def _drive(send: Callable[[], Awaitable[bytes]], total: int, concurrency: int) -> float:
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    for _ in range(50):  # warm the connection pool
        await send()
    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) * 1000 / total


async def main(base: str, total: int, concurrency: int) -> None:
    url = f"{base}/v1/chat/completions"
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits) as client:

        async def httpx_default() -> bytes:
            return (await client.post(url, content=BODY, headers=HEADERS)).content

        cost = await _drive(httpx_default, total, concurrency)
        print(f"httpx default transport : {cost:.3f} ms CPU/req")

    transport = AiohttpTransport(
        client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    )
    async with httpx.AsyncClient(transport=transport) as client:

        async def httpx_aiohttp() -> bytes:
            return (await client.post(url, content=BODY, headers=HEADERS)).content

        cost = await _drive(httpx_aiohttp, total, concurrency)
        print(f"httpx + aiohttp transport: {cost:.3f} ms CPU/req")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def aiohttp_direct() -> bytes:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                return await resp.read()

        cost = await _drive(aiohttp_direct, total, concurrency)
        print(f"aiohttp directly         : {cost:.3f} ms CPU/req")


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9311"
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    asyncio.run(main(base, total, concurrency))
