from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from aigw.auth.network import AllowList, ClientAddress, parse_ip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3", IPv4Address("10.1.2.3")),
        (" 10.1.2.3 ", IPv4Address("10.1.2.3")),
        ("10.1.2.3:8443", IPv4Address("10.1.2.3")),
        ("2001:db8::1", IPv6Address("2001:db8::1")),
        ("[2001:db8::1]", IPv6Address("2001:db8::1")),
        ("[2001:db8::1]:8443", IPv6Address("2001:db8::1")),
        ("::ffff:10.1.2.3", IPv4Address("10.1.2.3")),
        ("[::ffff:10.1.2.3]:80", IPv4Address("10.1.2.3")),
    ],
)
def test_parse_ip_accepts_what_sockets_and_proxies_write(text: str, expected: object) -> None:
    assert parse_ip(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "unknown", "10.1.2", "10.1.2.256", "[2001:db8::1", "1.2.3.4:80:80", "a" * 100, "<script>"],
)
def test_parse_ip_refuses_malformed_text(text: str) -> None:
    assert parse_ip(text) is None


def test_allow_list_matches_ipv4_and_ipv6_networks() -> None:
    allow = AllowList(["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"])
    assert allow.allows("10.200.3.4")
    assert allow.allows("192.168.1.7")
    assert not allow.allows("192.168.1.8")
    assert not allow.allows("11.0.0.1")
    assert allow.allows("2001:db8:ffff::1")
    assert not allow.allows("2001:db9::1")
    assert allow.allows(IPv4Address("10.0.0.1"))


def test_ipv4_mapped_addresses_match_ipv4_networks_and_back() -> None:
    assert AllowList(["10.0.0.0/8"]).allows("::ffff:10.1.2.3")
    assert AllowList(["10.0.0.0/8"]).allows(IPv6Address("::ffff:10.1.2.3"))
    mapped = AllowList(["::ffff:10.0.0.0/104"])
    assert mapped.allows("10.9.9.9")
    assert not mapped.allows("11.9.9.9")


@pytest.mark.parametrize("ip", ["", "garbage", "10.0.0", "::ffff:zz"])
def test_malformed_addresses_are_never_allowed(ip: str) -> None:
    assert not AllowList(["0.0.0.0/0", "::/0"]).allows(ip)


def test_an_empty_allow_list_allows_nothing() -> None:
    assert not AllowList([]).allows("127.0.0.1")


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "not-a-network", "10.0.0.0/33", ""])
def test_bad_networks_in_config_are_refused_by_name(cidr: str) -> None:
    with pytest.raises(ValueError, match="is not a CIDR network"):
        AllowList(["10.0.0.0/8", cidr])


TRUSTED = ["10.0.0.0/8", "fd00::/8"]


def test_xff_from_an_untrusted_peer_is_ignored() -> None:
    client = ClientAddress(TRUSTED)
    assert client.resolve("203.0.113.9", "1.1.1.1") == "203.0.113.9"
    assert client.resolve("203.0.113.9", "10.0.0.1") == "203.0.113.9"


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert ClientAddress().resolve("10.0.0.5", "1.1.1.1") == "10.0.0.5"


def test_a_trusted_proxy_reports_the_client() -> None:
    assert ClientAddress(TRUSTED).resolve("10.0.0.5", "198.51.100.7") == "198.51.100.7"
    assert ClientAddress(TRUSTED).resolve("10.0.0.5", None) == "10.0.0.5"
    assert ClientAddress(TRUSTED).resolve("10.0.0.5", "") == "10.0.0.5"


def test_the_walk_skips_every_trusted_proxy_right_to_left() -> None:
    client = ClientAddress(TRUSTED)
    assert client.resolve("10.0.0.5", "198.51.100.7, 10.0.0.9, 10.1.1.1") == "198.51.100.7"


def test_addresses_a_client_wrote_left_of_its_own_are_ignored() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4, 10.0.0.1" hoping to look trusted;
    # the proxy appended the address it really saw.
    client = ClientAddress(TRUSTED)
    assert client.resolve("10.0.0.5", "1.2.3.4, 10.0.0.1, 203.0.113.66") == "203.0.113.66"


def test_a_chain_of_only_trusted_hops_yields_the_leftmost() -> None:
    assert ClientAddress(TRUSTED).resolve("10.0.0.5", "10.9.9.9, 10.0.0.1") == "10.9.9.9"


def test_a_garbage_hop_stops_the_walk_at_the_proxy_that_reported_it() -> None:
    client = ClientAddress(TRUSTED)
    assert client.resolve("10.0.0.5", "1.2.3.4, unknown") == "10.0.0.5"
    assert client.resolve("10.0.0.5", "1.2.3.4, garbage, 10.0.0.7") == "10.0.0.7"


def test_ipv6_peers_hops_and_ports() -> None:
    client = ClientAddress(TRUSTED)
    assert client.resolve("fd00::1", "2001:db8::42, fd00::2") == "2001:db8::42"
    assert client.resolve("fd00::1", "[2001:db8::42]:51000") == "2001:db8::42"
    assert client.resolve("2001:db8::9", "198.51.100.7") == "2001:db8::9"


def test_an_ipv4_mapped_peer_is_an_ipv4_client() -> None:
    assert ClientAddress(TRUSTED).resolve("::ffff:10.0.0.5", "198.51.100.7") == "198.51.100.7"
    assert ClientAddress().resolve("::ffff:198.51.100.7") == "198.51.100.7"


def test_a_peer_that_is_not_an_address_is_returned_as_is_and_allowed_nowhere() -> None:
    peer = ClientAddress(TRUSTED).resolve("", "1.2.3.4")
    assert peer == ""
    assert not AllowList(["0.0.0.0/0"]).allows(peer)


def test_reprs_name_the_networks() -> None:
    assert repr(AllowList(["10.0.0.0/8"])) == "AllowList(['10.0.0.0/8'])"
    assert "10.0.0.0/8" in repr(ClientAddress(["10.0.0.0/8"]))
    assert AllowList(["10.0.0.0/8", "::1/128"]) == AllowList(["::1/128", "10.0.0.0/8"])
