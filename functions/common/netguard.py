"""SSRF protection for outbound connections: which addresses we may connect to.

Used by the page-fetching tool and by the model-provider client. Host names are resolved
here and the caller connects to the vetted address, so a name that resolves to a public
address when checked and to a private one when connected (DNS rebinding) cannot slip
through. Every address a name resolves to must pass: an attacker's round-robin record
with one internal entry is refused whole.

Anything that is not a globally routable unicast address is refused (private, loopback,
link-local, unspecified, multicast, carrier-grade NAT, documentation and reserved ranges,
and IPv6 forms that embed such an IPv4 address: mapped, 6to4, Teredo, NAT64, translated
and IPv4-compatible) unless the operator's allow-list names the host, a domain it is
under (an entry with a leading dot), or a network containing the address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressError(OSError):
    """A host we will not connect to. An OSError so that aiohttp, which wraps what its
    resolver raises, reports it as a connection failure like any unreachable host."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host
        self.message = message


class AddressRefused(AddressError):
    """The host is, or resolves to, an address the policy does not permit."""

    def __init__(self, host: str, address: IPAddress) -> None:
        super().__init__(host, f"{host} resolves to a private or reserved address ({address})")
        self.address = address


class Unresolvable(AddressError):
    """The host name does not resolve."""

    def __init__(self, host: str) -> None:
        super().__init__(host, f"Could not resolve host {host}.")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allowed_names: frozenset[str]
    allowed_suffixes: tuple[str, ...]  # ".svc.cluster.local": that domain and every name under it
    allowed_networks: tuple[IPNetwork, ...]

    @classmethod
    def from_entries(cls, entries: tuple[str, ...]) -> AddressPolicy:
        """Entries are host names, ``.domain`` suffixes, IP addresses or CIDRs
        (``JAN_FETCH_ALLOWED_HOSTS``, ``JAN_PROVIDER_ALLOWED_HOSTS``)."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.rstrip(".").lower()
            if name.startswith(".") and len(name) > 1:
                suffixes.append(name)
            elif name:
                names.add(name)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def names(self, host: str) -> bool:
        """Whether the allow-list names this host (by name or domain), whatever its address."""
        host = host.rstrip(".").lower()
        if host in self.allowed_names:
            return True
        return any(host.endswith(s) or host == s[1:] for s in self.allowed_suffixes)

    def permits(self, host: str, address: IPAddress) -> bool:
        if self.names(host):
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
    """Resolve ``host`` and return an address the policy permits; raise AddressError."""
    literal = ip_literal(host)
    addresses = [literal] if literal is not None else await resolve(host, port)
    refused = [a for a in addresses if not policy.permits(host, a)]
    if refused:
        raise AddressRefused(host, refused[0])
    return addresses[0]


def ip_literal(host: str) -> IPAddress | None:
    """The address a host written as an IP literal (``10.0.0.1``, ``[::1]``) stands for."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def parse_address(text: str) -> IPAddress:
    """An address as a resolver prints it; an IPv6 zone ("fe80::1%eth0") is dropped, since
    the address itself is what we vet."""
    return ipaddress.ip_address(text.split("%", 1)[0])


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to; Unresolvable when there is none."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(host) from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = parse_address(str(sockaddr[0]))
        if address not in found:
            found.append(address)
    if not found:
        raise Unresolvable(host)
    return found
