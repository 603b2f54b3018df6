"""What every connection is built with, typed, and what it reads of its site.

:class:`Settings` is made once by ``tap.makeServer`` from the options and
handed to the site, which hands it to each HTTP/1.1 channel and HTTP/2
connection (and so to its streams): a renamed field is a type error, not
a silent default. :class:`SiteView` is what those read of their site
(``site.PipeSite`` provides it), so neither protocol imports the site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from twisted.internet.interfaces import IReactorTime

from pipeserver.http.clients import ClientAddresses
from pipeserver.http.connections import Connections
from pipeserver.errors import Rejection
from pipeserver.domain.interfaces import Request


@dataclass(frozen=True)
class Settings:
    """The connection-level options (``twistd pipe --help`` names each)."""

    #: Seconds a client has to send a request's line and headers
    #: (``--header-timeout``; None or 0: no limit).
    header_timeout: Optional[float] = 20.0
    #: Header fields a request may have (``--max-headers``).
    max_headers: int = 100
    #: Bytes a request's head may take (``--max-header-bytes``).
    max_header_bytes: int = 16384
    #: Whether HTTP/2 is spoken at all (``--no-h2``: not).
    h2: bool = True
    #: Each HTTP/2 stream's window step (``--h2-window``).
    h2_window: int = 256 * 1024
    #: Streams an HTTP/2 connection may have open at once (``--h2-max-streams``).
    h2_max_streams: int = 100


class SiteView(Protocol):
    """What a channel, an HTTP/2 connection and its streams read of their
    site (``site.PipeSite``)."""

    settings: Settings
    #: Open connections and what each client holds through them.
    channels: Connections
    reactor: IReactorTime
    #: Twisted's idle timeout (``--idle-timeout``; None: none).
    timeOut: Optional[float]

    #: How a connection's peer is named (``--trusted-proxy``).
    clientAddresses: ClientAddresses

    def rejected(self, reason: str) -> None:
        """Count a request refused before any project is known."""

    def checkBeforeBody(self, request: Request) -> Optional[Rejection]:
        """The Rejection a PUT/POST would meet before its body, if any."""

    def log(self, request: Request) -> None:
        """One access line for ``request`` (``logs.access_line``)."""
