"""The site: what each connection is built with, and where it turns.

:class:`PipeSite` builds a :class:`~pipeserver.http1.channel.PipeChannel` for each
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
from twisted.web.resource import IResource
from zope.interface import classImplementsOnly

from pipeserver.http import _twisted
from pipeserver.http2 import connection as http2
from pipeserver.http1.channel import PipeChannel
from pipeserver.http.clients import ClientAddresses
from pipeserver.http.connections import Connections
from pipeserver.errors import Rejection
from pipeserver.domain.interfaces import Request
from pipeserver.http.logs import access_line
from pipeserver.domain.pipe import PipeRegistry
from pipeserver.http.request import PipeRequest
from pipeserver.web.resource import PipeResource
from pipeserver.http.settings import Settings


class RefusedConnection(protocol.Protocol):
    """A connection past its client's cap (``Connections.admit``): closed at
    once, before a byte is read or written, whatever protocol it would
    speak (under TLS, before the handshake)."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()


class PipeSite(server.Site):
    """A Site that builds :class:`PipeChannel` and :class:`PipeRequest`, each
    connection with the same :class:`~pipeserver.http.settings.Settings`
    (``settings.SiteView`` is what its channels and streams read of it)."""

    # Twisted's own protocol switch would hand h2 to its H2Connection, whose
    # streams' flow control the pipe does not drive: PipeChannel turns to
    # http2.H2Channel itself.
    protocol = PipeChannel  # type: ignore[assignment]  # Twisted types it as its h2-switching wrapper
    requestFactory = PipeRequest
    #: Counts the requests refused before they reach a pipe (its observer),
    #: when the server has one (``tap.ServerSite``).
    registry: Optional[PipeRegistry] = None

    def acceptableProtocols(self) -> List[bytes]:
        """What TLS offers by ALPN: h2 (http2.py, which PipeChannel hands
        the connection to) and HTTP/1.1."""
        return [b"h2", b"http/1.1"] if self.settings.h2 else [b"http/1.1"]

    def __init__(self, resource: IResource, *args: Any, settings: Optional[Settings] = None, **kwargs: Any) -> None:
        super().__init__(resource, *args, **kwargs)
        self.settings = settings if settings is not None else Settings()
        #: Open connections, so a shutdown can wait for their last bytes, and
        #: what each client holds through them (its cap, its queued bytes).
        self.channels = Connections()
        #: What one client's HTTP/2 connections share (frame budgets,
        #: waiting senders).
        self.h2Peers = http2.Peers(self.reactor)
        #: How a connection's peer is named (the resource's, behind proxies).
        self.clientAddresses = (
            resource.client_of if isinstance(resource, PipeResource) else ClientAddresses()
        )

    def rejected(self, reason: str) -> None:
        """Count a request refused before any project is known (metrics'
        ``pipeserver_rejections_total``, project "")."""
        if self.registry is not None:
            self.registry.observer.rejected("", reason)

    def checkBeforeBody(self, request: Request) -> Optional[Rejection]:
        """The Rejection a PUT/POST would meet before its body, if any
        (``PipeResource.checkBeforeBody``; None on another resource)."""
        if isinstance(self.resource, PipeResource):
            return self.resource.checkBeforeBody(request)
        return None

    def buildProtocol(self, addr: Any) -> Any:
        tab = self.channels.admit(addr)
        if tab is None:
            # Its client holds as many connections as it may: closed before
            # a byte is read or written, HTTP/1.1 and HTTP/2 alike.
            self.rejected("connection_limit")
            return RefusedConnection()
        channel = super().buildProtocol(addr)
        if channel is None:
            tab.close()
            return None
        settings = self.settings
        channel.tab = tab
        if settings.h2:
            channel.turn = http2.turn
        channel.headerTimeout = settings.header_timeout
        channel.maxHeaders = settings.max_headers
        channel.totalHeadersSize = settings.max_header_bytes
        channel.MAX_LENGTH = settings.max_header_bytes
        return channel

    def log(self, request: Any) -> None:
        """One access line per request (logs.access_line)."""
        access_line(request, self.reactor.seconds())


if _twisted.ALPN_SET_PER_CONNECTION:
    # No ALPN then: clients speak HTTP/1.1, their default, all the same.
    # tests/test_twisted_internals.py checks both ways on real handshakes.
    classImplementsOnly(PipeSite, IProtocolFactory, ILoggingContext)
