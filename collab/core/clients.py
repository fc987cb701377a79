"""Who the client is: the socket's peer, or the address a trusted reverse proxy forwarded.

Rule: pure; no tornado, no asyncio, no socket, no I/O. The headers a proxy adds
(``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) are believed only when the
socket's peer is inside a trusted network (``--trusted-proxy``); from anyone
else they are ignored, so a direct client cannot pick its own address.

Behind trusted proxies, each header present is read as a chain of hops
(client first, the nearest proxy last) and walked from the right, skipping
trusted hops: the first untrusted address is that header's client. A hop that
is not an address (``unknown``, an obfuscated ``_name``, garbage) stops the
walk at the last trusted hop, since nothing left of it can be attributed.

A proxy appends what it saw, but passes on whatever the client sent in the
*other* headers. So when the headers present name different untrusted
clients, none is believed and the peer is the client; a ``Forwarded`` header
that does not parse counts the same way (it may have swallowed the proxy's own
entry). The answer is therefore always either what the trusted proxy said or
the peer, never an address of the client's choosing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = ["Headers", "TrustedProxies", "parse_forwarded"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 7239 section 4: forwarded-pair = token "=" ( token / quoted-string ), pairs
# joined by ";" into an element, elements by ",". Unquoted values are read
# leniently (some proxies leave ``for=1.2.3.4:80`` unquoted).
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^\s;,"]+)\s*')
_HOST_PORT = re.compile(r"^\[(?P<v6>[^\]]+)\](?::(?P<p6>\w+))?$|^(?P<v4>[\d.]+)(?::(?P<p4>\w+))?$")


class Headers(Protocol):
    """What is read of a request's headers (Tornado's ``HTTPHeaders`` fits)."""

    def get_list(self, name: str) -> list[str]: ...


def _address(text: str) -> _Address | None:
    """An IP address from ``text`` (a bare IP, ``1.2.3.4:80``, ``[::1]`` or ``[::1]:80``)."""
    text = text.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        match = _HOST_PORT.match(text)
        if match is None:
            return None
        try:
            address = ipaddress.ip_address(match["v6"] or match["v4"])
        except ValueError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


def parse_forwarded(values: Sequence[str]) -> list[str] | None:
    """The ``for=`` node of each element of ``Forwarded`` header lines, left to right.

    An element without ``for=`` gives ``""`` (a hop that names nobody).

    Returns:
        None if the header does not follow RFC 7239's syntax.
    """
    text = ",".join(values)
    nodes: list[str] = []
    pos = 0
    while True:
        node = ""
        while True:  # the pairs of one element
            match = _PAIR.match(text, pos)
            if match is None:
                return None
            name, value = match[1].lower(), match[2]
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if name == "for":
                node = value
            pos = match.end()
            if pos == len(text) or text[pos] == ",":
                break
            if text[pos] != ";":
                return None
            pos += 1
        nodes.append(node)
        if pos == len(text):
            return nodes
        pos += 1


class TrustedProxies:
    """The networks whose forwarding headers are believed.

    Args:
        cidrs: networks such as ``"10.0.0.0/8"``, ``"::1/128"`` or a bare address.

    Raises:
        ValueError: a network is malformed (the message names it).
    """

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        networks: list[_Network] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ValueError(f"invalid CIDR {cidr!r}") from None
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: _Address | None) -> bool:
        """Whether ``address`` is inside a trusted network."""
        return address is not None and any(address in net for net in self.networks)

    def client_address(self, peer: str, headers: Headers) -> str:
        """The client's address, given the socket's ``peer`` and the request headers.

        Returns:
            The forwarded client's address (normalized) when ``peer`` is a trusted
            proxy and the headers agree on it; otherwise ``peer`` unchanged.
        """
        if not self.networks or not self.trusts(proxy := _address(peer)):
            return peer
        chains: list[list[str]] = []
        forwarded = headers.get_list("Forwarded")
        if forwarded:
            nodes = parse_forwarded(forwarded)
            if nodes is None:
                return peer
            chains.append(nodes)
        forwarded_for = headers.get_list("X-Forwarded-For")
        if forwarded_for:
            chains.append(",".join(forwarded_for).split(","))
        real_ip = headers.get_list("X-Real-IP")
        if real_ip:
            chains.append(real_ip if len(real_ip) == 1 else [""])
        found = {self._walk(chain, proxy) for chain in chains}
        untrusted = {a for a in found if not self.trusts(a)}
        if len(untrusted) == 1:
            return str(untrusted.pop())
        if len(untrusted) == 0 and len(found) == 1:
            return str(found.pop())
        return peer

    def _walk(self, hops: list[str], proxy: _Address | None) -> _Address | None:
        """The first untrusted hop from the right, else the last trusted one reached."""
        last = proxy
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return last
            if not self.trusts(address):
                return address
            last = address
        return last
