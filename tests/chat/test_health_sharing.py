"""Endpoint health travels between instances through the database."""

from __future__ import annotations

import time

import httpx

from functions.chat.health import DatabaseHealthStore, HealthBook
from functions.common.runtime import Runtime


async def test_an_ejection_reaches_a_fresh_instance(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    store = DatabaseHealthStore(lambda: runtime.db.writer)
    first = HealthBook(store)
    ep = first.endpoint("http://gpu-1/v1")
    for _ in range(3):
        first.failed(ep)
    await first.settle()
    assert ep.ejected

    fresh = HealthBook(store)
    await fresh.pull()
    seen = fresh.endpoint("http://gpu-1/v1")
    assert seen.ejected and seen.ejected_until > time.time()

    async def answers(url: str) -> bool:
        return True

    ep.ejected_until = time.time() - 1
    await first.probe_due(answers)
    await first.settle()
    await fresh.pull()
    assert not seen.ejected
