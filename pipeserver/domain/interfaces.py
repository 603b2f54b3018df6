"""What a pipe talks to, and what it is given: the domain's interfaces.

A :class:`~pipeserver.domain.pipe.Pipe` knows its sender and receivers only as a
:class:`SenderParty` and :class:`ReceiverParty` (parties.py adapts HTTP
requests to them; the domain's unit tests use fakes), sizes its sender's
reads through a :class:`Pacer` (fastpath.py), and tells its ``Observer``
(pipe.py; metrics.py has one) how each pipe went (an :class:`Outcome`).
:class:`Limits` is what the registry admits. Nothing here does I/O, and
nothing here knows the pipe (pipe.py builds on this module).

Outside the heart, :class:`Request` lists what the routing (``resource.py``),
the pages, the authorizer (``tokens.py``) and the client naming
(``clients.py``) use of a request (``request.PipeRequest`` provides it), and
:class:`IServerReactor` the reactor ``makeService`` takes. Twisted's own
``IRequest`` is a zope Interface with no attribute types; a Protocol lets
mypy check both the callers and the fakes the tests build.
"""

from __future__ import annotations

import enum
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Protocol,
    Tuple,
    Union,
)

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorTime,
)
from twisted.web.http_headers import Headers

from pipeserver.errors import Replying
from pipeserver.domain.multipart import FirstPartDecoder

Data = Union[bytes, memoryview]


class Outcome(enum.Enum):
    """How a pipe ended (its value is the metrics' ``outcome`` label)."""

    COMPLETED = "completed"
    #: A side failed mid-transfer (or a shutdown's grace ran out).
    ABORTED = "aborted"
    TIMED_OUT = "timed_out"
    #: Every waiting party went away before it was established.
    LEFT = "left"
    SHUT_DOWN = "shut_down"


class Watcher(Protocol):
    """Tells when the peer of a paused transport goes away
    (``fastpath.HangupWatcher``); the parties use it, the pipe only holds it."""

    def watch(self, transport: object) -> None: ...

    def watchReset(self, transport: object) -> None: ...

    def unwatch(self, transport: object) -> None: ...


class _NoWatcher:
    def watch(self, transport: object) -> None:
        pass

    def watchReset(self, transport: object) -> None:
        pass

    def unwatch(self, transport: object) -> None:
        pass


class Pacer(Protocol):
    """Sizes a sender's reads while it streams (``fastpath.ReadPacer``)."""

    def read(self, got: int = 0) -> None:
        """A read brought ``got`` body bytes (0: reading resumes)."""

    def stop(self) -> None:
        """The transfer is over: reads go back to their default."""


class PartyRequest(Protocol):
    """A party's HTTP request, which the pipe never touches: an Observer
    reads when it came and what its response carried."""

    #: When it came (the site's clock).
    startedAt: float
    #: Body bytes written to its response.
    sentLength: int


class SenderParty(Protocol):
    """The sender, as its pipe sees it (``parties.Upload``)."""

    client: Optional[str]

    @property
    def request(self) -> PartyRequest:
        """Its HTTP request (see :class:`PartyRequest`)."""

    #: Decodes a form's body to its first part's bytes (None: sent as is).
    decoder: Optional[FirstPartDecoder]

    @property
    def bodyComplete(self) -> bool:
        """Whether its whole body was in when it joined."""

    def say(self, line: str) -> None:
        """A progress line for the sender (without its newline)."""

    def flush(self) -> None:
        """Put what was said so far on the wire now."""

    def finish(self) -> None:
        """End its response: the transfer succeeded."""

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        """End its connection so its client sees a failure; ``how`` says why
        (``ABORTED``, ``TIMED_OUT``, ``SHUT_DOWN``), for its access line."""

    def setReading(self, reading: bool) -> None:
        """Read its body (True) or leave it in the kernel (False)."""

    def receiverHeaders(self) -> Optional[List[Tuple[bytes, bytes]]]:
        """What receivers' responses carry (None: not known yet)."""

    def pacer(self, clock: IReactorTime, room: Callable[[], int]) -> Pacer:
        """What sizes its reads; ``room`` tells what all receivers can take."""


class ReceiverParty(Protocol):
    """A receiver, as its pipe sees it (``parties.Download``)."""

    client: Optional[str]

    @property
    def request(self) -> PartyRequest:
        """Its HTTP request (see :class:`PartyRequest`)."""

    def start(self, headers: Iterable[Tuple[bytes, bytes]]) -> None:
        """Begin its response with ``headers``."""

    def write(self, data: Data) -> None: ...

    def writeSequence(self, pieces: List[Data], size: int) -> None:
        """Body bytes, ``size`` in all."""

    def finish(self) -> None:
        """End its response: it got every byte."""

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        """End its response short, so its client sees it truncated; ``how``
        says why, for its access line."""

    def cut(self) -> None:
        """End its connection at once (it stalled, or a shutdown cut it)."""

    def reject(self, status: int, text: str, how: Outcome) -> None:
        """Answer it (still waiting) with an error; ``how`` says why
        (``TIMED_OUT``, ``SHUT_DOWN``)."""

    def taken(self) -> int:
        """Bytes of its response its client has taken so far."""

    def room(self) -> int:
        """Bytes its connection can take at once (0: unknown)."""

    def held(self) -> int:
        """Body bytes the server holds for it in memory."""


class _NoPacing:
    """A sender whose reads nobody sizes (TLS, a fake): reads stay Twisted's."""

    def read(self, got: int = 0) -> None:
        pass

    def stop(self) -> None:
        pass


NO_PACING = _NoPacing()


class Limits:
    """How much the registry admits; past a limit a request gets a 503.

    ``max_parties_per_client`` caps the parties (senders and receivers,
    waiting or transferring) one client address holds at once;
    ``max_waiting_per_project`` applies only when tokens are configured
    (None: not at all), since without them everybody is one project.
    The site's, per client (connections.py): ``max_connections_per_client``
    open connections, ``max_queued_per_client`` bytes of responses it has
    not taken before its connections start nothing new (None: no limit).
    """

    def __init__(
        self,
        max_receivers: int = 256,
        max_waiting: int = 4096,
        max_waiting_per_project: Optional[int] = 1024,
        max_parties_per_client: Optional[int] = None,
        stall_timeout: float = 60.0,
        max_connections_per_client: Optional[int] = None,
        max_queued_per_client: Optional[int] = None,
    ) -> None:
        self.max_receivers = max_receivers
        self.max_waiting = max_waiting
        self.max_waiting_per_project = max_waiting_per_project
        self.max_parties_per_client = max_parties_per_client
        #: Seconds a receiver of a fan-out pipe may take no byte (0: never cut).
        self.stall_timeout = stall_timeout
        self.max_connections_per_client = max_connections_per_client
        self.max_queued_per_client = max_queued_per_client


# ---- outside the heart: the request and the reactor, typed


class Request(Replying, Protocol):
    """What pipeserver reads and writes on a request outside the heart."""

    # Asked for: the request line and the query.
    method: bytes
    uri: bytes
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
    #: Set by the resource once it joined a pipe: plain, queue or live.
    mode: str

    # What the pipe attaches (parties.PipeRequestLike); read only here.
    @property
    def transport(self) -> object: ...

    @property
    def producer(self) -> object: ...

    @property
    def bodySink(self) -> object: ...

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
