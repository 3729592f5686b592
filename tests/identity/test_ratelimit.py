"""The login limiter: a sliding window per address, shared through Redis when configured,
and falling back to memory when Redis is unreachable; the address is the socket peer, or
behind trusted proxies the right-most untrusted X-Forwarded-For hop."""

from __future__ import annotations

import ipaddress
import uuid

import httpx
import pytest
from starlette.requests import Request

from functions.app import create_app
from functions.auth.ratelimit import LoginRateLimiter, client_address
from functions.common.errors import RateLimited
from functions.common.runtime import Runtime
from tests.conftest import component, make_settings


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
        await first.stop()
        await second.stop()


TRUSTED = [ipaddress.ip_network(n) for n in ("127.0.0.1/32", "::1/128", "10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # An untrusted peer is the client, whatever it claims.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        # Knative: client → ingress (10.x) → activator (10.x) → queue-proxy (127.0.0.1).
        ("127.0.0.1", ["198.51.100.7, 10.1.2.3, 10.4.5.6"], "198.51.100.7"),
        # A forged left part is ignored: the right-most untrusted hop wins.
        ("127.0.0.1", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], "198.51.100.7"),
        ("127.0.0.1", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # header repeated
        # Every hop trusted: the left-most is as far as we can see.
        ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
        ("127.0.0.1", [], "127.0.0.1"),
        # Garbage where an address should be: stop at the trusted hop that passed it on.
        ("127.0.0.1", ["not-an-ip, 10.1.2.3"], "10.1.2.3"),
        # Ports, IPv4-mapped peers, IPv6 clients counted per /64.
        ("::ffff:127.0.0.1", ["198.51.100.7:5555"], "198.51.100.7"),
        ("::1", ["[2001:db8:1:2:aaaa::1]:443"], "2001:db8:1:2::/64"),
        ("2001:db8::5", [], "2001:db8::/64"),
        (None, [], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded_for: list[str], expected: str) -> None:
    assert client_address(peer, forwarded_for, TRUSTED) == expected


def test_nothing_trusted_by_default() -> None:
    assert client_address("127.0.0.1", ["198.51.100.7"], []) == "127.0.0.1"


async def _login_statuses(database_dsn: str, trusted: str, clients: list[str]) -> list[int]:
    """Google login attempts (unconfigured: 503 until limited) with each X-Forwarded-For."""
    runtime = Runtime(make_settings(database_dsn, jan_trusted_proxies=trusted))
    app = create_app(runtime)
    await runtime.open()
    component(runtime, LoginRateLimiter).limit = 2
    try:
        transport = httpx.ASGITransport(app=app)  # the peer is 127.0.0.1
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [
                (
                    await client.get(
                        "/v1/auth/google/login",
                        headers={"X-Forwarded-For": f"{address}, 10.0.0.3"},
                    )
                ).status_code
                for address in clients
            ]
    finally:
        await runtime.close()


async def test_forwarded_client_limited_alone_behind_trusted_proxies(database_dsn: str) -> None:
    a, b = f"198.51.100.{uuid.uuid4().int % 250}", f"203.0.113.{uuid.uuid4().int % 250}"
    codes = await _login_statuses(database_dsn, "127.0.0.1/32,10.0.0.0/8", [a, a, a, b])
    assert codes == [503, 503, 429, 503]  # b has its own budget


async def test_forwarded_for_ignored_from_untrusted_peers(database_dsn: str) -> None:
    spoofed = [f"198.51.100.{n}" for n in range(3)]
    codes = await _login_statuses(database_dsn, "", spoofed)
    assert codes == [503, 503, 429]  # a new address per request does not escape the limit
