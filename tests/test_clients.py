"""The client address behind reverse proxies (``collab.core.clients``): pure table tests."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from collab.core.clients import TrustedProxies, parse_forwarded

PROXY = "10.0.0.1"  # the socket peer in most rows: a proxy inside 10.0.0.0/8
TRUSTED = TrustedProxies(["10.0.0.0/8", "::1/128", "fd00::/8"])


def headers(*lines: tuple[str, str]) -> HTTPHeaders:
    """Request headers, one ``(name, value)`` per header line (repeats allowed)."""
    result = HTTPHeaders()
    for name, value in lines:
        result.add(name, value)
    return result


XFF, FWD, REAL = "X-Forwarded-For", "Forwarded", "X-Real-IP"

CASES = [
    # (peer, header lines, expected client, why)
    ("203.0.113.9", [(XFF, "1.2.3.4")], "203.0.113.9", "an untrusted peer's XFF is ignored"),
    ("203.0.113.9", [(FWD, "for=1.2.3.4")], "203.0.113.9", "an untrusted peer's Forwarded too"),
    ("203.0.113.9", [(REAL, "1.2.3.4")], "203.0.113.9", "an untrusted peer's X-Real-IP too"),
    (PROXY, [], PROXY, "no header: the proxy itself"),
    (PROXY, [(XFF, "1.2.3.4")], "1.2.3.4", "one hop"),
    (PROXY, [(XFF, "6.6.6.6, 1.2.3.4")], "1.2.3.4", "a spoofed left entry is not believed"),
    (PROXY, [(XFF, "6.6.6.6, 1.2.3.4, 10.0.0.7")], "1.2.3.4", "trusted hops are skipped"),
    (PROXY, [(XFF, "6.6.6.6"), (XFF, "1.2.3.4")], "1.2.3.4", "repeated lines join in order"),
    (PROXY, [(XFF, "10.9.9.9, 10.0.0.7")], "10.9.9.9", "all trusted: the leftmost"),
    (PROXY, [(XFF, "1.2.3.4:5678")], "1.2.3.4", "IPv4 with a port"),
    (PROXY, [(XFF, "[2001:db8::1]:443")], "2001:db8::1", "bracketed IPv6 with a port"),
    (PROXY, [(XFF, "2001:DB8::1")], "2001:db8::1", "bare IPv6, normalized"),
    (PROXY, [(XFF, "::ffff:1.2.3.4")], "1.2.3.4", "IPv4-mapped IPv6 is the IPv4 address"),
    (PROXY, [(XFF, "garbage")], PROXY, "not an address: the proxy"),
    (PROXY, [(XFF, "1.2.3.4, garbage")], PROXY, "the walk stops at garbage"),
    (PROXY, [(XFF, "1.2.3.4, unknown, 10.0.0.7")], "10.0.0.7", "stops at the last trusted hop"),
    (PROXY, [(XFF, "")], PROXY, "empty"),
    (PROXY, [(XFF, "1.2.3.4,,")], PROXY, "empty entries on the right"),
    (PROXY, [(XFF, "999.1.1.1")], PROXY, "not an IPv4 address"),
    (PROXY, [(FWD, "for=1.2.3.4")], "1.2.3.4", "Forwarded"),
    (PROXY, [(FWD, "For=1.2.3.4;proto=https;by=10.0.0.1")], "1.2.3.4", "pairs, any case"),
    (PROXY, [(FWD, 'for="[2001:db8:cafe::17]:4711"')], "2001:db8:cafe::17", "quoted IPv6, port"),
    (PROXY, [(FWD, 'for="1.2.3.4:80"')], "1.2.3.4", "quoted IPv4 with a port"),
    (PROXY, [(FWD, "for=6.6.6.6, for=1.2.3.4")], "1.2.3.4", "elements walked from the right"),
    (PROXY, [(FWD, "for=6.6.6.6"), (FWD, "for=1.2.3.4")], "1.2.3.4", "repeated Forwarded lines"),
    (PROXY, [(FWD, "for=1.2.3.4, for=10.0.0.9")], "1.2.3.4", "a trusted element skipped"),
    (PROXY, [(FWD, "for=unknown")], PROXY, "unknown: the proxy"),
    (PROXY, [(FWD, "for=_hidden, for=10.0.0.9")], "10.0.0.9", "obfuscated: the last trusted hop"),
    (PROXY, [(FWD, "proto=https")], PROXY, "no for=: nobody named"),
    (PROXY, [(FWD, 'for="1.2.3.4')], PROXY, "unterminated quote: malformed, ignored"),
    (PROXY, [(FWD, "for=1.2.3.4;;")], PROXY, "empty pair: malformed"),
    (PROXY, [(FWD, "for")], PROXY, "no value: malformed"),
    (PROXY, [(REAL, "1.2.3.4")], "1.2.3.4", "X-Real-IP alone"),
    (PROXY, [(REAL, "1.2.3.4"), (REAL, "5.6.7.8")], PROXY, "two X-Real-IP lines: none"),
    (PROXY, [(XFF, "1.2.3.4"), (REAL, "1.2.3.4")], "1.2.3.4", "headers that agree"),
    (PROXY, [(XFF, "1.2.3.4"), (FWD, 'for="1.2.3.4:9"')], "1.2.3.4", "agree (ports aside)"),
    # A proxy appends to its own header and passes the client's others on: a
    # forged second header makes the headers disagree, and then none is believed.
    (PROXY, [(XFF, "1.2.3.4"), (FWD, "for=6.6.6.6")], PROXY, "forged Forwarded"),
    (PROXY, [(XFF, "1.2.3.4"), (REAL, "6.6.6.6")], PROXY, "forged X-Real-IP"),
    (PROXY, [(REAL, "1.2.3.4"), (XFF, "6.6.6.6")], PROXY, "forged X-Forwarded-For"),
    (PROXY, [(XFF, "1.2.3.4"), (FWD, 'for="6.6.6.6')], PROXY, "a malformed Forwarded too"),
    (PROXY, [(XFF, "1.2.3.4"), (REAL, "10.0.0.3")], "1.2.3.4", "a trusted address says nothing"),
    (PROXY, [(XFF, "10.0.0.4"), (REAL, "10.0.0.3")], PROXY, "two trusted ones disagree"),
    ("::1", [(XFF, "2001:db8::7")], "2001:db8::7", "an IPv6 proxy"),
    ("::ffff:10.0.0.1", [(XFF, "1.2.3.4")], "1.2.3.4", "a dual-stack socket's IPv4 proxy"),
    ("fd00::1", [(FWD, 'for="[fd00::2]", for="[2001:db8::9]"')], "2001:db8::9", "v6 chain"),
    ("not-an-ip", [(XFF, "1.2.3.4")], "not-an-ip", "an unreadable peer is not trusted"),
]


@pytest.mark.parametrize(("peer", "lines", "expected", "why"), CASES, ids=[c[3] for c in CASES])
def test_client_address(peer: str, lines: list[tuple[str, str]], expected: str, why: str) -> None:
    assert TRUSTED.client_address(peer, headers(*lines)) == expected, why


def test_no_trusted_proxy_means_the_headers_never_count() -> None:
    nobody = TrustedProxies()
    assert not nobody
    spoofed = headers((XFF, "1.2.3.4"), (FWD, "for=1.2.3.4"), (REAL, "1.2.3.4"))
    assert nobody.client_address("127.0.0.1", spoofed) == "127.0.0.1"
    assert TrustedProxies(["127.0.0.1/32"]).client_address("127.0.0.2", spoofed) == "127.0.0.2"


def test_networks_are_parsed_or_refused_by_name() -> None:
    proxies = TrustedProxies(["192.168.1.7", " 10.1.2.3/8 ", "2001:db8::/32"])
    assert [str(n) for n in proxies.networks] == ["192.168.1.7/32", "10.0.0.0/8", "2001:db8::/32"]
    for bad in ["10.0.0.0/33", "nonsense", "", "1.2.3.4/x"]:
        with pytest.raises(ValueError, match=f"invalid CIDR {bad!r}"):
            TrustedProxies(["10.0.0.0/8", bad])


def test_parse_forwarded_reads_rfc_7239() -> None:
    assert parse_forwarded(["for=192.0.2.60;proto=http;by=203.0.113.43"]) == ["192.0.2.60"]
    assert parse_forwarded(['for="_gazonk"', 'For="[2001:db8:cafe::17]:4711"']) == [
        "_gazonk",
        "[2001:db8:cafe::17]:4711",
    ]
    assert parse_forwarded(["for=192.0.2.43, for=198.51.100.17;by=x"]) == [
        "192.0.2.43",
        "198.51.100.17",
    ]
    assert parse_forwarded(['for="a\\"b"']) == ['a"b']
    assert parse_forwarded(["proto=https"]) == [""]
    for bad in ['for="x', "for=a b", "=x", "for=a,", "for=a;", "a", ";for=a"]:
        assert parse_forwarded([bad]) is None, bad
