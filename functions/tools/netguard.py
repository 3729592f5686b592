"""SSRF protection for outbound fetches: which addresses a tool may connect to.

We resolve host names ourselves and hand the caller the vetted address to connect to, so a
name that resolves to a public address when checked and to a private one when connected
(DNS rebinding) cannot slip through. Every address a name resolves to must pass: an
attacker's round-robin record with one internal entry is refused whole.

Anything that is not a globally routable unicast address is refused (private, loopback,
link-local, unspecified, multicast, carrier-grade NAT, documentation and reserved ranges,
and IPv6 forms that embed such an IPv4 address: mapped, 6to4, Teredo, NAT64, translated
and IPv4-compatible) unless the operator's allow-list names the host or a network
containing the address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from functions.tools.base import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allowed_names: frozenset[str]
    allowed_networks: tuple[IPNetwork, ...]

    @classmethod
    def from_entries(cls, entries: tuple[str, ...]) -> AddressPolicy:
        """Entries are host names, IP addresses or CIDRs (``JAN_FETCH_ALLOWED_HOSTS``)."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.rstrip(".").lower())
        return cls(frozenset(names), tuple(networks))

    def permits(self, host: str, address: IPAddress) -> bool:
        if host.rstrip(".").lower() in self.allowed_names:
            return True
        if any(address in network for network in self.allowed_networks):
            return True
        return is_public(address)


# IPv6 prefixes whose last 32 bits are an IPv4 address that a translator or the stack
# may reach: NAT64's well-known prefix (an IPv6-only cluster's gateway turns
# 64:ff9b::a9fe:a9fe into 169.254.169.254), SIIT's IPv4-translated form, and the
# deprecated IPv4-compatible form. Python calls the first two global.
_IPV4_IN_LAST_32_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
)


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (and may be delivered to), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


async def vetted_address(host: str, port: int, policy: AddressPolicy) -> IPAddress:
    """Resolve ``host`` and return an address the policy permits, or raise ToolError."""
    literal = _ip_literal(host)
    addresses = [literal] if literal is not None else await _resolve(host, port)
    refused = [a for a in addresses if not policy.permits(host, a)]
    if refused:
        raise ToolError(
            f"Refusing to fetch {host}: it resolves to a private or reserved address "
            f"({refused[0]}). Only public addresses may be fetched."
        )
    return addresses[0]


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"Could not resolve host {host}.") from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Drop an IPv6 zone ("fe80::1%eth0"); the address itself is what we vet.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise ToolError(f"Could not resolve host {host}.")
    return found
