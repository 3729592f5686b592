"""The process's client for ordinary outbound HTTP (OIDC discovery and token calls, web
search APIs): one ``httpx.AsyncClient`` with explicit limits and timeouts, opened with the
runtime, closed on stop. Built only for the areas that call out (auth, the tools).

Model traffic does not use it: the inference router has its own client
(``functions.common.upstream``), tuned for proxying and guarded against private addresses.
"""

from __future__ import annotations

import httpx

from functions.common.runtime import Component, NotOpen


class Outbound(Component):
    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise NotOpen("outbound HTTP client not open")
        return self._client

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5, read=600, write=30, pool=30),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
