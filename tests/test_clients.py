# mypy: disable-error-code="arg-type"
"""Which client a request counts against (clients.py, SPEC §9), without sockets."""

from __future__ import annotations

import ipaddress
from typing import List, Optional, Sequence, Tuple

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.http_headers import Headers

from pipeserver.http import clients
from pipeserver.http.clients import PEERS_KEPT, ClientAddresses, network


class FakeRequest:
    def __init__(self, peer: object, headers: Sequence[Tuple[bytes, bytes]] = ()) -> None:
        self.peer = peer
        self.requestHeaders = Headers()
        for name, value in headers:
            self.requestHeaders.addRawHeader(name, value)

    def getClientAddress(self) -> object:
        return self.peer


PROXY = IPv4Address("TCP", "10.1.2.3", 4444)
CLIENTS = ClientAddresses([network("10.1.0.0/16"), network("fd00::/8")])


def client(peer: object, *headers: Tuple[bytes, bytes], of: Optional[ClientAddresses] = None) -> str:
    return (of or CLIENTS)(FakeRequest(peer, headers))


def test_the_peer_is_the_client_without_trusted_proxies() -> None:
    assert client(IPv4Address("TCP", "192.0.2.1", 1)) == "192.0.2.1"
    assert client(IPv4Address("TCP", "192.0.2.1", 1), (b"X-Forwarded-For", b"6.6.6.6"),
                  of=ClientAddresses()) == "192.0.2.1"


def test_unix_socket_peers_share_one_bucket() -> None:
    assert client(UNIXAddress(b"/run/pipe.sock")) == "unix"
    assert client(UNIXAddress(None)) == "unix"
    assert client(UNIXAddress(None), (b"X-Forwarded-For", b"192.0.2.9")) == "unix"


def test_a_proxy_on_a_unix_socket_can_be_trusted() -> None:
    trusting = ClientAddresses([network("unix")])
    peer = UNIXAddress(b"/run/pipe.sock")
    assert client(peer, (b"X-Forwarded-For", b"192.0.2.9"), of=trusting) == "192.0.2.9"
    assert client(peer, (b"X-Forwarded-For", b"junk"), of=trusting) == "unix"
    assert client(peer, of=trusting) == "unix"


def test_ipv6_clients_count_by_their_64() -> None:
    assert client(IPv6Address("TCP", "2001:db8:1:2:aaaa::1", 1)) == "2001:db8:1:2::/64"
    assert client(IPv6Address("TCP", "::ffff:192.0.2.9", 1)) == "192.0.2.9"


def test_headers_of_an_untrusted_peer_are_ignored() -> None:
    peer = IPv4Address("TCP", "192.0.2.1", 1)
    assert client(peer, (b"X-Forwarded-For", b"6.6.6.6")) == "192.0.2.1"
    assert client(peer, (b"Forwarded", b"for=6.6.6.6")) == "192.0.2.1"


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([(b"X-Forwarded-For", b"192.0.2.9")], "192.0.2.9"),
        # The right-most address that is not a proxy of ours: a client may
        # put anything on the left.
        ([(b"X-Forwarded-For", b"6.6.6.6, 192.0.2.9, 10.1.9.9")], "192.0.2.9"),
        ([(b"X-Forwarded-For", b"6.6.6.6"), (b"X-Forwarded-For", b"192.0.2.9")], "192.0.2.9"),
        ([(b"X-Forwarded-For", b"192.0.2.9:5555")], "192.0.2.9"),
        ([(b"X-Forwarded-For", b"[2001:db8::7]:5555")], "2001:db8::/64"),
        ([(b"X-Forwarded-For", b"2001:db8::7")], "2001:db8::/64"),
        ([(b"X-Forwarded-For", b"10.1.0.1, fd00::1")], "10.1.0.1"),  # all ours: the left-most
        ([(b"Forwarded", b"for=192.0.2.60;proto=http;by=203.0.113.43")], "192.0.2.60"),
        ([(b"Forwarded", b'for="[2001:db8:cafe::17]:4711"')], "2001:db8:cafe::/64"),
        ([(b"Forwarded", b"for=6.6.6.6, for=192.0.2.43, for=10.1.1.1")], "192.0.2.43"),
        ([(b"Forwarded", b'For="192.0.2.43:80"')], "192.0.2.43"),
        # X-Forwarded-For first when a proxy sends both.
        ([(b"Forwarded", b"for=6.6.6.6"), (b"X-Forwarded-For", b"192.0.2.9")], "192.0.2.9"),
    ],
)
def test_a_trusted_proxy_reports_the_client(headers, expected) -> None:
    assert client(PROXY, *headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"X-Forwarded-For", b"")],
        [(b"X-Forwarded-For", b"garbage")],
        [(b"X-Forwarded-For", b"192.0.2.9, unknown")],
        [(b"X-Forwarded-For", b"[2001:db8::7")],
        [(b"X-Forwarded-For", b"[2001:db8::7]x")],
        [(b"X-Forwarded-For", b"999.1.1.1")],
        [(b"X-Forwarded-For", b"\xff\xfe")],
        [(b"Forwarded", b"for=unknown")],
        [(b"Forwarded", b"for=_hidden")],
        [(b"Forwarded", b"proto=http")],
        [(b"Forwarded", b"for=1.2.3.4;for=5.6.7.8")],
        [(b"Forwarded", b";;==,,")],
    ],
)
def test_garbage_from_a_trusted_proxy_counts_against_the_proxy(headers) -> None:
    assert client(PROXY, *headers) == "10.1.2.3"


def test_a_peer_is_parsed_once_and_a_trusted_one_still_read_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A keep-alive connection asks for its client at every request (issue
    20): its address is parsed once, but what a trusted proxy reports is
    read from each request's own headers."""
    parsed: List[str] = []
    real = clients._address

    def counting(text: str) -> Optional[clients.IPAddress]:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(clients, "_address", counting)
    of = ClientAddresses([network("10.1.0.0/16")])
    peer = IPv4Address("TCP", "192.0.2.1", 1)
    assert [client(peer, of=of) for _ in range(50)] == ["192.0.2.1"] * 50
    assert of.peer(peer) == ("192.0.2.1", False)
    assert parsed == ["192.0.2.1"]
    assert client(PROXY, (b"X-Forwarded-For", b"192.0.2.9"), of=of) == "192.0.2.9"
    assert client(PROXY, (b"X-Forwarded-For", b"192.0.2.10"), of=of) == "192.0.2.10"
    assert client(PROXY, of=of) == "10.1.2.3"
    assert of.peer(PROXY) == ("10.1.2.3", True)
    assert parsed.count("10.1.2.3") == 1


def test_a_flood_of_peer_addresses_keeps_no_more_than_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many peers (IPv6 hands out plenty) cost parsing, never memory: at
    most PEERS_KEPT are kept, and each still gets its own bucket."""
    of = ClientAddresses()
    for n in range(PEERS_KEPT * 2 + 5):
        host = f"2001:db8:0:{n:x}::1"
        assert client(IPv6Address("TCP", host, 1), of=of) == str(ipaddress.ip_network(f"{host}/64", strict=False))
    parsed: List[str] = []
    real = clients._address

    def counting(text: str) -> Optional[clients.IPAddress]:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(clients, "_address", counting)
    assert client(IPv6Address("TCP", "2001:db8::1", 1), of=of) == "2001:db8::/64"
    last = f"2001:db8:0:{PEERS_KEPT * 2 + 4:x}::1"
    assert client(IPv6Address("TCP", last, 1), of=of) == f"2001:db8:0:{PEERS_KEPT * 2 + 4:x}::/64"
    # An early one was dropped (parsed again); the last one is kept.
    assert parsed == ["2001:db8::1"]
    assert len(of._peers) <= PEERS_KEPT
