"""The address policy behind the SSRF protection of the fetch tool and model providers."""

from __future__ import annotations

import ipaddress

import pytest

from functions.common.netguard import (
    AddressPolicy,
    AddressRefused,
    Unresolvable,
    is_public,
    vetted_address,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "2002:0a00:0001::1",  # 6to4 around 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (Python calls the prefix global)
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo around 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"],  # NAT64 of 8.8.8.8
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_allow_list_names_hosts_and_networks() -> None:
    policy = AddressPolicy.from_entries(("10.0.0.0/8", "Intranet.Example", "::1"))
    assert policy.permits("anything", ipaddress.ip_address("10.9.9.9"))
    assert policy.permits("intranet.example.", ipaddress.ip_address("192.168.0.5"))
    assert policy.permits("x", ipaddress.ip_address("::1"))
    assert not policy.permits("x", ipaddress.ip_address("192.168.0.5"))


def test_a_leading_dot_allows_a_domain_and_every_name_under_it() -> None:
    policy = AddressPolicy.from_entries((".svc.cluster.local",))
    private = ipaddress.ip_address("10.96.0.12")
    assert policy.permits("vllm.models.svc.cluster.local", private)
    assert policy.permits("VLLM.Models.SVC.cluster.local.", private)
    assert policy.permits("svc.cluster.local", private)
    assert not policy.permits("evilsvc.cluster.local", private)
    assert not policy.permits("svc.cluster.local.evil.example", private)
    assert not policy.permits("169.254.169.254", ipaddress.ip_address("169.254.169.254"))


async def test_names_are_resolved_and_every_address_vetted() -> None:
    open_policy = AddressPolicy.from_entries(("localhost",))
    assert (await vetted_address("localhost", 80, open_policy)).is_loopback
    with pytest.raises(AddressRefused, match="private or reserved"):
        await vetted_address("localhost", 80, AddressPolicy.from_entries(()))
    with pytest.raises(AddressRefused, match="private or reserved"):
        await vetted_address("[::1]", 80, AddressPolicy.from_entries(()))
    with pytest.raises(Unresolvable):
        await vetted_address("no-such-host.invalid", 80, AddressPolicy.from_entries(()))
