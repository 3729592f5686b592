"""Where a request comes from: the client's address behind trusted reverse proxies.

Behind Knative every socket peer is a proxy (queue-proxy, activator, ingress), so the
client is read from ``X-Forwarded-For`` when, and only when, the peer is one of
``JAN_TRUSTED_PROXIES``: the right-most hop not itself a trusted proxy. Hops further left
were written by the client and are never believed. Used by the login rate limit (which
counts IPv6 clients per /64) and the audit log (which records the address itself).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.requests import Request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(value: str) -> IPAddress | None:
    """An address from a socket peer or a forwarded hop (a port, if any, dropped)."""
    value = value.strip()
    if value.startswith("["):  # "[2001:db8::1]:443"
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # "203.0.113.7:443"
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return address


def client_ip(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> IPAddress | str | None:
    """The client's address (see the module docstring); the peer's text, cut to 100
    characters, when it is not an IP (a Unix socket path); None without a peer."""
    if not peer:
        return None
    address = parse_address(peer)
    if address is None:
        return peer[:100]  # nothing to believe beyond it

    def is_trusted(a: IPAddress) -> bool:
        return any(a in network for network in trusted)

    if is_trusted(address):
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            parsed = parse_address(hop)
            if parsed is None:
                break  # garbage: keep the trusted hop that handed it over
            address = parsed
            if not is_trusted(parsed):
                break
    return address


def trusted_networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    """``JAN_TRUSTED_PROXIES`` (validated by the settings) as networks, parsed once."""
    return [ipaddress.ip_network(n) for n in cidrs]


def request_ip(request: Request, trusted: Sequence[IPNetwork]) -> str | None:
    """The client address of ``request`` as text."""
    found = client_ip(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        trusted,
    )
    return None if found is None else str(found)
