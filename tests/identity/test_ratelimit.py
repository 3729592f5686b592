"""The login limiter: a sliding window per address, shared through Redis when configured,
and falling back to memory when Redis is unreachable."""

from __future__ import annotations

import uuid

import pytest
from starlette.requests import Request

from functions.auth.ratelimit import LoginRateLimiter
from functions.common.errors import RateLimited


def _request(address: str) -> Request:
    return Request({"type": "http", "client": (address, 1234), "headers": []})


@pytest.mark.parametrize("redis_url", ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:1/0"])
async def test_limit_per_address(redis_url: str) -> None:
    first = LoginRateLimiter(limit=2, window=30, redis_url=redis_url)
    second = LoginRateLimiter(limit=2, window=30, redis_url=redis_url)
    address = f"10.{uuid.uuid4().int % 250}.0.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    try:
        await first.check(_request(address))
        await first.check(_request(address))
        await first.check(_request("elsewhere-" + address))  # other addresses unaffected
        limiter = second if "6379" in redis_url else first  # Redis: shared across instances
        with pytest.raises(RateLimited):
            await limiter.check(_request(address))
    finally:
        await first.close()
        await second.close()
