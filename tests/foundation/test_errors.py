"""Errors are never shared instances: an exception object raised more than once collects
the frames of every raise in its ``__traceback__`` (and keeps them alive)."""

from __future__ import annotations

from types import SimpleNamespace, TracebackType
from typing import Any, cast

import pytest

from functions.common import errors
from functions.common.upstream import Upstream
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.health import HealthBook
from functions.services.inference.router import Router
from functions.services.providers.directory import Provider

BODY = b'{"model": "m1", "messages": [{"role": "user", "content": "hi"}]}'


def depth(tb: TracebackType | None) -> int:
    n = 0
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


def test_the_generic_500_is_a_new_error_each_time() -> None:
    first, second = errors.internal_error(), errors.internal_error()
    assert first is not second and first.body() == second.body()
    assert first.status == 500 and first.body()["error"]["code"] == "internal_error"
    assert not hasattr(errors, "GENERIC_500")  # the shared instance is gone


def _broken_router() -> tuple[Router, ModelRoute]:
    """A router whose HTTP client fails with a bug of ours (not an upstream failure)."""

    def post(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the request path")

    client = cast(Upstream, SimpleNamespace(session=SimpleNamespace(post=post)))
    health = HealthBook(None)
    url = "http://127.0.0.1:9"
    provider = Provider("prov_t", "org_t", None, "test", "vllm", (url,), None)
    route = ModelRoute("m1", provider, (health.endpoint(url),), provider.headers, "test", 0)
    return Router(health, client, backoff_seconds=0), route


@pytest.mark.parametrize("streamed", [False, True])
async def test_consecutive_unexpected_failures_raise_distinct_errors(streamed: bool) -> None:
    router, route = _broken_router()
    call = router.open_stream if streamed else router.send
    raised: list[errors.APIError] = []
    for _ in range(3):
        with pytest.raises(errors.ServerError) as caught:
            await call(route, "/chat/completions", BODY)
        raised.append(caught.value)
    assert len({id(exc) for exc in raised}) == 3
    assert all(exc.status == 500 and exc.code == "internal_error" for exc in raised)
    # Each carries the frames of its own raise only: a shared instance's would grow.
    depths = [depth(exc.__traceback__) for exc in raised]
    assert depths[0] == depths[1] == depths[2]
