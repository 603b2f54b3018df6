"""The request and the reactor as the modules outside the heart see them, typed.

``channel.PipeRequest`` (a ``twisted.web.server.Request``) provides all of
it. :class:`Request` lists what the routing (``resource.py``), the pages,
the authorizer (``tokens.py``) and the client naming (``clients.py``) use,
plus what ``pipe.PipeRequestLike`` asks of a request handed to the registry,
so that one can be passed on where the other is expected. Twisted's own
``IRequest`` is a zope Interface with no attribute types; a Protocol lets
mypy check both the callers and the fakes the tests build.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorTime,
)
from twisted.web.http_headers import Headers


class Replying(Protocol):
    """What an error reply (``errors.plain_reply``) needs of a request."""

    def setResponseCode(self, code: int) -> None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...


class Request(Replying, Protocol):
    """What pipeserver reads and writes on a request outside the heart."""

    # Asked for: the request line and the query.
    method: bytes
    path: bytes
    args: Dict[bytes, List[bytes]]
    clientproto: bytes
    requestHeaders: Headers

    # Answered: the status set so far and the response headers.
    code: int
    responseHeaders: Headers
    defaultContentType: Optional[bytes]

    #: Set by the resource once the request is authorized ("" when open).
    project: str

    # What the pipe attaches (pipe.PipeRequestLike).
    transport: object
    producer: object
    bodySink: object

    def getHeader(self, key: bytes) -> Optional[bytes]: ...

    def isSecure(self) -> bool: ...

    def getHost(self) -> IAddress: ...

    def getClientAddress(self) -> IAddress: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


class IServerReactor(IReactorCore, IReactorTime, IReactorFDSet, IReactorFromThreads):
    """The reactor the server runs on, as ``makeService`` takes it: twistd's
    reactors provide all of these (``twisted.internet.reactor`` is typed as
    a similar conglomerate, without IReactorFromThreads). Each part of the
    server is given the reactor as the one interface it uses: the registry,
    tokens and metrics a clock (IReactorTime), the hang-up watcher an
    IReactorFDSet; the service starts, stops and signals with the rest."""
