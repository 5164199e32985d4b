"""Client addresses behind proxies, and CIDR allow-lists.

``ClientAddress`` finds the real client of a request: the socket peer, unless the peer
is a trusted proxy, in which case ``X-Forwarded-For`` is walked right to left (each
proxy appends the address it received from) past every trusted proxy; the first hop
that is not one is the client. A peer that is not trusted never has its
``X-Forwarded-For`` read: anyone can write that header.

Addresses are normalised: an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, what a
dual-stack socket reports for IPv4 clients) is the IPv4 address, in allow-lists too.
Malformed input never raises: an address that does not parse is allowed by no list.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Longer than any address with a port and an IPv6 zone; longer text is not an address.
_MAX_ADDRESS_CHARS = 64
_MAPPED_V4 = IPv6Network("::ffff:0:0/96")


def parse_ip(text: str) -> Address | None:
    """An address from a socket or a forwarding header, or ``None`` if it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]`` and ``[::1]:5678`` (some
    proxies write ports into ``X-Forwarded-For``).
    """
    text = text.strip()
    if not text or len(text) > _MAX_ADDRESS_CHARS:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    return _unmapped(ip)


def _unmapped(ip: Address) -> Address:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_network(cidr: str) -> Network:
    """A network from config; host bits set (``10.0.0.1/8``) is an error, not a guess."""
    try:
        net = ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{cidr!r} is not a CIDR network ({exc})") from None
    if isinstance(net, IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED_V4):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return IPv4Network((mapped, net.prefixlen - 96))
    return net


class AllowList:
    """A set of CIDR networks, IPv4 and IPv6; ``allows(ip)`` is one set lookup per
    distinct prefix length. An empty list allows nothing."""

    __slots__ = ("_v4", "_v6", "cidrs")

    def __init__(self, cidrs: Iterable[str]) -> None:
        networks = [_parse_network(cidr) for cidr in cidrs]
        self.cidrs = tuple(str(net) for net in networks)
        self._v4 = self._index(net for net in networks if net.version == 4)
        self._v6 = self._index(net for net in networks if net.version == 6)

    @staticmethod
    def _index(networks: Iterable[Network]) -> tuple[tuple[int, frozenset[int]], ...]:
        """(shift, network prefixes as ints) per prefix length, the shortest first."""
        by_length: dict[int, set[int]] = {}
        for net in networks:
            shift = net.max_prefixlen - net.prefixlen
            by_length.setdefault(shift, set()).add(int(net.network_address) >> shift)
        return tuple(
            (shift, frozenset(prefixes))
            for shift, prefixes in sorted(by_length.items(), reverse=True)
        )

    def allows(self, ip: str | Address) -> bool:
        address = parse_ip(ip) if isinstance(ip, str) else _unmapped(ip)
        if address is None:
            return False
        index = self._v4 if address.version == 4 else self._v6
        value = int(address)
        return any(value >> shift in prefixes for shift, prefixes in index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AllowList) and set(self.cidrs) == set(other.cidrs)

    def __hash__(self) -> int:
        return hash(frozenset(self.cidrs))

    def __repr__(self) -> str:
        return f"AllowList({list(self.cidrs)!r})"


class ClientAddress:
    """The real client address, given the trusted proxies' CIDRs."""

    __slots__ = ("trusted",)

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted = AllowList(trusted_proxies)

    def resolve(self, peer: str, forwarded_for: str | None = None) -> str:
        """The client's address as text, normalised.

        ``peer`` is the socket's; ``forwarded_for`` is ``X-Forwarded-For`` with several
        header lines joined by commas in order. A hop that does not parse stops the
        walk: the client is then the trusted proxy that reported it. A peer that is not
        an address (a Unix socket) is returned as it is, and no list allows it.
        """
        client = parse_ip(peer)
        if client is None:
            return peer
        if forwarded_for and self.trusted.allows(client):
            for hop in reversed(forwarded_for.split(",")):
                address = parse_ip(hop)
                if address is None:
                    break
                client = address
                if not self.trusted.allows(client):
                    break
        return str(client)

    def __repr__(self) -> str:
        return f"ClientAddress(trusted_proxies={list(self.trusted.cidrs)!r})"
