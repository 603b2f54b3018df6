"""Who a request comes from, for the per-client limit (SPEC §9).

A client is its peer's address, or, when the peer is a ``--trusted-proxy``,
the address that proxy reports in ``X-Forwarded-For`` (or, without it,
``Forwarded: for=``, RFC 7239). Headers from any other peer are ignored: a
client must not choose its own bucket. What a trusted proxy reports is read
from the right, skipping trusted proxies, so the first address a proxy of
ours saw is the one counted; anything unparsable there counts against the
proxy itself, never an error.

Unix-socket peers are one client, unless ``--trusted-proxy unix`` says a
proxy connects that way. IPv6 clients are counted by their /64: one host commonly holds a whole /64
and could otherwise take a new bucket per address.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from twisted.internet.address import IPv4Address, IPv6Address

from pipeserver.domain.interfaces import Request

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The one bucket of peers without an IP address (Unix sockets).
LOCAL = "unix"
#: How many addresses of one header are looked at, at most.
MAX_HOPS = 32
#: How many peers' parsed addresses a ClientAddresses keeps (then it starts
#: over): parsing one costs about as much as the rest of the limit's work.
PEERS_KEPT = 4096


def network(text: str) -> Union[IPNetwork, str]:
    """A ``--trusted-proxy`` value: a CIDR, a single address, or ``unix``
    (every Unix-socket peer)."""
    if text.strip().lower() == LOCAL:
        return LOCAL
    return ipaddress.ip_network(text.strip(), strict=False)


def _address(text: str) -> Optional[IPAddress]:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:80``,
    ``2001:db8::1``, ``[2001:db8::1]`` or ``[2001:db8::1]:80``; None if it
    is none of these (``unknown``, an obfuscated ``_name``, garbage)."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def _forwarded_for(values: Iterable[bytes]) -> Optional[List[str]]:
    """The ``for=`` of each element of ``Forwarded`` headers, in order; None
    if an element has none (then the header tells us nothing reliable)."""
    found: List[str] = []
    for value in values:
        for element in value.decode("latin-1").split(","):
            fors = [
                pair.split("=", 1)[1]
                for pair in element.split(";")
                if "=" in pair and pair.split("=", 1)[0].strip().lower() == "for"
            ]
            if len(fors) != 1:
                return None
            found.append(fors[0])
    return found


def bucket(address: IPAddress) -> str:
    """The name a client address is counted under."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ClientAddresses:
    """Names the client of a request: ``ClientAddresses(trusted)(request)``."""

    def __init__(self, trusted: Sequence[Union[IPNetwork, str]] = ()) -> None:
        #: Unix-socket peers are trusted too (``--trusted-proxy unix``): a
        #: proxy on the same host that connects over a Unix socket.
        self.trustUnix = LOCAL in trusted
        self.trusted = [net for net in trusted if not isinstance(net, str)]
        # A peer's host -> what _parsePeer found; cleared when full, so a
        # flood of addresses costs the parsing and no memory.
        self._peers: Dict[str, Tuple[str, bool]] = {}

    def _trusted(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.trusted)

    def _parsePeer(self, host: str) -> Tuple[str, bool]:
        """A peer's bucket and whether it is a trusted proxy, kept: every
        request of a keep-alive connection, and every connection of a busy
        client, asks again, and ``ipaddress`` parsing was ~4 % of a small
        transfer's CPU."""
        found = self._peers.get(host)
        if found is None:
            address = _address(host)
            if address is None:
                found = (str(host), False)
            else:
                found = (bucket(address), bool(self.trusted) and self._trusted(address))
            if len(self._peers) >= PEERS_KEPT:
                self._peers.clear()
            self._peers[host] = found
        return found

    def __call__(self, request: Request) -> str:
        peer = request.getClientAddress()
        if not isinstance(peer, (IPv4Address, IPv6Address)):
            reported = self._reported(request) if self.trustUnix else None
            return LOCAL if reported is None else bucket(reported)
        client, trusted = self._parsePeer(peer.host)
        if trusted:
            reported = self._reported(request)
            if reported is not None:
                return bucket(reported)
        return client

    def peer(self, peer: object) -> Tuple[str, bool]:
        """The client a connection from ``peer`` counts against before any
        request is read (``connections.Connections``), and whether ``peer``
        is a trusted proxy, whose connections carry many clients."""
        if not isinstance(peer, (IPv4Address, IPv6Address)):
            return LOCAL, self.trustUnix
        return self._parsePeer(peer.host)

    def ofConnection(self, peer: object) -> Optional[str]:
        """The client a connection from ``peer`` belongs to, for what is
        counted per connection rather than per request (HTTP/2's frame
        budgets): its address's bucket, or None when the peer is a trusted
        proxy, whose connections carry many clients."""
        client, trusted = self.peer(peer)
        return None if trusted else client

    def _reported(self, request: Request) -> Optional[IPAddress]:
        """The client a trusted proxy reports, or None when it reports
        nothing usable."""
        headers = request.requestHeaders
        xff = headers.getRawHeaders(b"x-forwarded-for")
        if xff:
            hops: Optional[List[str]] = [
                hop for value in xff for hop in value.decode("latin-1").split(",")
            ]
        else:
            forwarded = headers.getRawHeaders(b"forwarded")
            hops = _forwarded_for(forwarded) if forwarded else None
        if not hops:
            return None
        found: Optional[IPAddress] = None
        for hop in reversed(hops[-MAX_HOPS:]):
            found = _address(hop)
            if found is None:
                return None
            if not self._trusted(found):
                return found
        # Every hop is a proxy of ours: the left-most is the client.
        return found
