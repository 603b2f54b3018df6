"""The site: what each connection is built with, and where it turns.

:class:`PipeSite` builds a :class:`~pipeserver.channel.PipeChannel` for each
connection its client may open (past its cap, a :class:`RefusedConnection`)
and offers h2 by ALPN; the channel's first bytes may turn the connection
to HTTP/2 (``http2.turn``, which the site hands each channel). It sits
above both protocols, so neither imports the other.
"""

# twisted.web's Site is untyped, and this module subclasses and calls it
# from typed code.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet import protocol
from twisted.internet.interfaces import ILoggingContext, IProtocolFactory
from twisted.web import server
from zope.interface import classImplementsOnly

from pipeserver import _twisted, http2
from pipeserver.channel import PipeChannel
from pipeserver.connections import Connections
from pipeserver.logs import access_line
from pipeserver.request import PipeRequest


class RefusedConnection(protocol.Protocol):
    """A connection past its client's cap (``Connections.admit``): closed at
    once, before a byte is read or written, whatever protocol it would
    speak (under TLS, before the handshake)."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()


class PipeSite(server.Site):
    """A Site that builds :class:`PipeChannel` and :class:`PipeRequest`."""

    # Twisted's own protocol switch would hand h2 to its H2Connection, whose
    # streams' flow control the pipe does not drive: PipeChannel turns to
    # http2.H2Channel itself.
    protocol = PipeChannel  # type: ignore[assignment]  # Twisted types it as its h2-switching wrapper
    requestFactory = PipeRequest
    headerTimeout: Optional[float] = 20.0
    maxHeaders = 100
    totalHeadersSize = 16384
    #: HTTP/2 (http2.py): spoken at all; each stream's window step; the
    #: streams a connection may have open at once.
    h2Enabled = True
    h2Window = 256 * 1024
    h2MaxStreams = 100
    #: What one client's HTTP/2 connections share (``http2.Peers``: frame
    #: budgets, waiting senders), made at the first HTTP/2 connection.
    h2Peers: Any = None

    def acceptableProtocols(self) -> List[bytes]:
        """What TLS offers by ALPN: h2 (http2.py, which PipeChannel hands
        the connection to) and HTTP/1.1."""
        return [b"h2", b"http/1.1"] if self.h2Enabled else [b"http/1.1"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Open connections, so a shutdown can wait for their last bytes, and
        #: what each client holds through them (its cap, its queued bytes).
        self.channels = Connections()

    def buildProtocol(self, addr: Any) -> Any:
        tab = self.channels.admit(addr)
        if tab is None:
            # Its client holds as many connections as it may: closed before
            # a byte is read or written, HTTP/1.1 and HTTP/2 alike.
            registry = getattr(self, "registry", None)
            if registry is not None:
                registry.observer.rejected("", "connection_limit")
            return RefusedConnection()
        channel = super().buildProtocol(addr)
        if channel is None:
            tab.close()
            return None
        channel.tab = tab
        if self.h2Enabled:
            channel.turn = http2.turn
        channel.headerTimeout = self.headerTimeout
        channel.maxHeaders = self.maxHeaders
        channel.totalHeadersSize = self.totalHeadersSize
        channel.MAX_LENGTH = self.totalHeadersSize
        return channel

    def log(self, request: Any) -> None:
        """One access line per request (logs.access_line)."""
        access_line(request, self.reactor.seconds())


if _twisted.ALPN_SET_PER_CONNECTION:
    # No ALPN then: clients speak HTTP/1.1, their default, all the same.
    # tests/test_twisted_internals.py checks both ways on real handshakes.
    classImplementsOnly(PipeSite, IProtocolFactory, ILoggingContext)
