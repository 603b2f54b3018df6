"""The parties: HTTP requests adapted to a pipe's sender and receiver.

:class:`Upload` is the sender's request as its pipe sees it
(``pipe.SenderParty``), and the request's body sink; :class:`Download` a
receiver's (``pipe.ReceiverParty``), registered on its request as a push
producer once streaming. Both are protocol-neutral; their HTTP/1.1 forms
(:class:`ConnectionUpload`, :class:`ConnectionDownload`) are here, their
HTTP/2 peers in h2stream.py, and each request's channel builds its own for
:class:`HTTPParties`, which makes them for the registry. How bytes move
fast on HTTP/1.1 (straight to sockets, reads sized to the receivers) is in
fastpath.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from pipeserver import errors
from pipeserver.http import _twisted, disposition
from pipeserver.http.fastpath import (
    DirectWrites,
    ReadPacer,
    direct_socket,
    reset,
    send_buffered_now,
)
from pipeserver.errors import Rejection
from pipeserver.http.gate import PIPE, ReadGate
from pipeserver.headers import passable
from pipeserver.domain.multipart import FirstPartDecoder, boundary_of
from pipeserver.domain.interfaces import NO_PACING, Data, Outcome, Pacer
from pipeserver.domain.pipe import State

if TYPE_CHECKING:
    from pipeserver.domain.pipe import Pipe

# How long a party we closed may keep its socket to drain what it was sent.
CLOSE_GRACE = 10.0
# How long a sender we shut still has its upload read (and dropped), so it
# reads our last lines rather than a reset; short, since many clients (curl
# -T -) only report the failure once the connection is cut.
SENDER_LINGER = 2.0


class PipeRequestLike(Protocol):
    """What the pipe needs of a request (``request.PipeRequest`` provides it)."""

    transport: Any
    #: Its channel: the HTTP/1.1 connection or the HTTP/2 stream.
    channel: "PartyBuilder"
    clientproto: bytes
    args: Dict[bytes, List[bytes]]
    requestHeaders: Headers
    responseHeaders: Headers
    producer: object
    bodySink: object
    defaultContentType: Optional[bytes]
    #: Why the pipe ended it early, for its access line (logs.result).
    endedBy: Optional[Outcome]
    #: Body bytes written to its response (logs, ``taken``).
    sentLength: int
    #: When it came (the site's clock).
    startedAt: float
    #: Whether its whole body is in; its length (None: chunked), and the
    #: bytes of it read so far.
    bodyComplete: bool
    bodyLength: Optional[int]
    bodyBytes: int

    def getHeader(self, key: bytes) -> Optional[bytes]: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> "Deferred[None]": ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


def close_failing(transport: Any, clock: IReactorTime, half: bool = False) -> IDelayedCall:
    """Close a connection so its client sees a failure, not a clean end.

    What is already buffered is still sent; a peer that does not take it
    within ``CLOSE_GRACE`` seconds is cut. With ``half`` only our side is shut,
    so a sender still uploading reads our last lines instead of a reset, and
    it is cut after ``SENDER_LINGER`` seconds (its caller reads on).
    Returns the cut, which its party cancels once the connection is gone.
    """
    shut = getattr(transport, "loseWriteConnection", None)
    if half and shut is not None:
        shut()
    else:
        transport.loseConnection()

    def cut() -> None:
        if getattr(transport, "connected", False) and hasattr(transport, "abortConnection"):
            transport.abortConnection()

    return clock.callLater(SENDER_LINGER if half and shut is not None else CLOSE_GRACE, cut)


def cancel(call: Optional[IDelayedCall]) -> None:
    """Cancel ``call`` if it is still to run."""
    if call is not None and call.active():
        call.cancel()


def content_type(value: bytes) -> bytes:
    """``text/html`` is served as ``text/plain`` so a pipe cannot host pages.

    Each comma-separated item is rewritten: browsers take the last valid
    type of ``text/plain, text/html``. (The receiver's CSP sandbox keeps
    script from running whatever the type; this keeps HTML from rendering.)"""
    if b"," in value:
        return b",".join(content_type(item) for item in value.split(b","))
    mime, sep, params = value.partition(b";")
    if mime.strip().lower() == b"text/html":
        space = mime[: len(mime) - len(mime.lstrip())]
        return space + b"text/plain" + sep + params
    return value


class Upload:
    """The sender's request, as its pipe sees it, on either protocol.

    It is the request's body sink: the HTTP layer hands it body chunks as
    they arrive, the end of the body, and the loss of the connection. How
    its body is held back (:meth:`setReading`), its reads sized, its lines
    flushed and its failure shown are its connection's:
    :class:`ConnectionUpload` on HTTP/1.1, ``h2stream.StreamUpload`` on an
    HTTP/2 stream; each request's channel builds its own (``makeSender``).
    """

    #: The client address it counts against while in its pipe (None after).
    client: Optional[str] = None
    _cut: Optional[IDelayedCall] = None  # close()'s cut, cancelled once gone

    def __init__(self, pipe: "Pipe", request: PipeRequestLike, buffered: bool = False) -> None:
        self.pipe = pipe
        self.request = request
        self.transport: Any = request.transport
        # A proxy that cannot stream a response while it still sends the
        # request body (nginx; see docs/proxies.md), or HTTP/1.0
        # (``buffered``): every line at the end, in one response.
        self._buffered = buffered or request.getHeader(b"x-pipe-progress") == b"at-end"
        self._lines: List[bytes] = []
        #: Whether the pipe lets it read.
        self.reading = True
        self.decoder: Optional[FirstPartDecoder] = None
        ctype = request.getHeader(b"content-type")
        if ctype is not None:
            boundary = boundary_of(ctype)
            if boundary is not None:
                self.decoder = FirstPartDecoder(boundary)
        request.setResponseCode(200)
        errors.plain_headers(request)
        request.bodySink = self

    @property
    def bodyComplete(self) -> bool:
        """Whether its whole body was read already (with its head)."""
        return self.request.bodyComplete

    # -- what the sender sees
    _probed = False  # the next line's "[" went ahead of it (halfClosed)

    def say(self, line: str) -> None:
        data = line.encode("utf-8") + b"\n"
        if self._probed and data.startswith(b"["):
            self._probed = False
            data = data[1:]
        if self._buffered:
            # HTTP/1.0 has no chunks: send it all at the end with a length,
            # so a failure (no response at all) is told apart from success.
            self._lines.append(data)
        else:
            self.request.write(data)

    def finish(self) -> None:
        # The pipe is done with the connection, which may carry another
        # request: the channel reads it (requestDone) unless it holds it.
        self.setReading(True)
        if self._buffered:
            body = b"".join(self._lines)
            self.request.setHeader(b"content-length", b"%d" % len(body))
            self.request.write(body)
        self.request.finish()

    def flush(self) -> None:
        """Put the response so far (its head and lines) on the wire now."""
        raise NotImplementedError

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        """End its connection so its client sees a failure."""
        raise NotImplementedError

    # -- reading the body
    def pacer(self, clock: IReactorTime, room: Callable[[], int]) -> Pacer:
        """What sizes this sender's reads (none unless its connection can)."""
        return NO_PACING

    def setReading(self, reading: bool) -> None:
        """Read its body on (True), or hold it back (False)."""
        raise NotImplementedError

    def receiverHeaders(self) -> Optional[List[Tuple[bytes, bytes]]]:
        """The headers receivers get, or None until a form's part headers are in."""
        headers: List[Tuple[bytes, bytes]] = []
        source: Headers = self.request.requestHeaders
        if self.decoder is not None:
            if self.decoder.headers is None:
                return None
            source = self.decoder.headers
        else:
            length = source.getRawHeaders(b"content-length")
            if length:
                headers.append((b"Content-Length", length[0]))
        # A value with a control byte (a NUL in a form part's header) is
        # dropped, not passed on: receivers never get a forged header.
        for value in source.getRawHeaders(b"content-type", [])[:1]:
            if passable(value):
                headers.append((b"Content-Type", content_type(value)))
        for value in source.getRawHeaders(b"content-disposition", [])[:1]:
            if passable(value):
                headers.append((b"Content-Disposition", value))
        piping = [
            value
            for value in self.request.requestHeaders.getRawHeaders(b"x-piping", [])
            if passable(value)
        ]
        for value in piping:
            headers.append((b"X-Piping", value))
        headers.append((b"Access-Control-Allow-Origin", b"*"))
        if piping:
            headers.append((b"Access-Control-Expose-Headers", b"X-Piping"))
        headers.append((b"X-Robots-Tag", b"none"))
        return headers

    # -- the body sink, called by the HTTP layer
    def bodyChunk(self, data: bytes) -> None:
        self.pipe.write(data)

    def bodyChunks(self, pieces: List[Data]) -> None:
        self.pipe.writeSequence(pieces)

    def bodyEnded(self) -> None:
        self.pipe.bodyEnded()

    def halfClosed(self) -> None:
        """Its client shut its side after its whole body (only HTTP/1.1
        says so: :meth:`ConnectionUpload.halfClosed`)."""

    def connectionLost(self, reason: Failure) -> None:
        cancel(self._cut)  # gone already: nothing left to cut
        self.pipe.senderLost(self)


class ConnectionUpload(Upload):
    """A sender on an HTTP/1.1 connection: held back by the connection's
    read gate (the kernel keeps its bytes), its reads sized to the
    receivers (``fastpath.ReadPacer``), its hang-up seen while paused
    (the pipe's watcher), its failure a half-close and a linger."""

    def __init__(self, pipe: "Pipe", request: PipeRequestLike, gate: ReadGate) -> None:
        # HTTP/1.0 (no chunks): every line at the end, in one response.
        super().__init__(pipe, request, buffered=request.clientproto != b"HTTP/1.1")
        self.gate = gate

    def finish(self) -> None:
        # A half-closed sender's reset no longer matters (halfClosed).
        self.pipe.watcher.unwatch(self.transport)
        super().finish()

    def halfClosed(self) -> None:
        """Its client shut its side after its whole body: a FIN, which is
        what a client that half-closes (nc -N) sends, and all a killed one
        sends too. The one still there waits for its lines; the one gone
        must free its place. Every line starts with "[", so that byte is
        sent now, ahead of the next line: a gone client's kernel answers it
        with a reset, which the watcher sees."""
        if self.pipe.state is not State.WAITING or self._buffered or self._probed:
            return  # (lines held for the end: nothing may be sent yet)
        self.request.write(b"[")
        self._probed = True
        self.pipe.watcher.watchReset(self.transport)

    def flush(self) -> None:
        """Put the response so far (its head and lines, which
        ``request.write`` leaves in the transport's buffer) on the socket
        now: receivers' heads go straight to theirs (``Download.start``),
        and a client may wait for the sender's response before it reads the
        receivers' (piping-server's own tests do)."""
        send_buffered_now(self.transport)

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        self.request.endedBy = how
        self.pipe.watcher.unwatch(self.transport)
        self._cut = close_failing(self.transport, clock, half=True)
        # Read on (and drop) what it still sends, so it sees our lines.
        self.reading = True
        self.gate.drain()

    def pacer(self, clock: IReactorTime, room: Callable[[], int]) -> Pacer:
        """What sizes this sender's reads: the fast path's on a plain TCP
        connection, none otherwise."""
        sock = direct_socket(self.transport)
        if sock is None:
            return NO_PACING
        return ReadPacer(clock, self.transport, sock, room, self.unread)

    def unread(self) -> Optional[int]:
        """Body bytes still to come, if the sender said how many."""
        length = self.request.bodyLength
        if length is None:
            return None
        return max(0, length - self.request.bodyBytes)

    def setReading(self, reading: bool) -> None:
        if reading == self.reading:
            if not reading and self.pipe.state is State.WAITING:
                # Paused by a reader, now waiting (a live stream's last
                # reader left): its hang-up must be seen from now on.
                self.pipe.watcher.watch(self.transport)
            return
        self.reading = reading
        if reading:
            self.pipe.watcher.unwatch(self.transport)
            self.gate.release(PIPE)
        else:
            self.gate.hold(PIPE)
            if self.pipe.state is State.WAITING:
                self.pipe.watcher.watch(self.transport)

    def connectionLost(self, reason: Failure) -> None:
        self.pipe.watcher.unwatch(self.transport)
        super().connectionLost(reason)


@implementer(IPushProducer)
class Download:
    """A receiver's request, on either protocol: a push producer registered
    on it once streaming.

    Its transport pauses it when it can take no more; the pipe then pauses
    the upload until every receiver can take more. How body bytes go out,
    what its connection can take and has taken, and how its response is
    cut short are its connection's: :class:`ConnectionDownload` on
    HTTP/1.1, ``h2stream.StreamDownload`` on an HTTP/2 stream; each
    request's channel builds its own (``makeReceiver``).
    """

    #: The client address it counts against while in its pipe (None after).
    client: Optional[str] = None
    _cut: Optional[IDelayedCall] = None  # close()'s cut, cancelled once gone

    def __init__(self, pipe: "Pipe", request: PipeRequestLike) -> None:
        self.pipe = pipe
        self.request = request
        self.transport: Any = request.transport
        # Twisted would otherwise label the bytes text/html.
        request.defaultContentType = None
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, reason: Failure) -> None:
        cancel(self._cut)  # gone already: nothing left to cut
        self.pipe.receiverLost(self)

    # IPushProducer, driven by this receiver's transport
    def pauseProducing(self) -> None:
        self.pipe.receiverPaused(self)

    def resumeProducing(self) -> None:
        self.pipe.receiverResumed(self)

    def stopProducing(self) -> None:
        # The connection is going; notifyFinish's errback tells the pipe.
        pass

    def start(self, headers: Iterable[Tuple[bytes, bytes]]) -> None:
        request = self.request
        try:
            override = disposition.requested(request.args)
        except Rejection:
            override = None  # refused before it joined (resource.py)
        if override is not None:
            # ?download= / ?filename=: this receiver's own Content-Disposition.
            headers = override.apply(list(headers))
        request.setResponseCode(200)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        request.registerProducer(self, True)
        request.write(b"")
        self.headWritten()

    def headWritten(self) -> None:
        """Its response head is written (to be sent now)."""
        raise NotImplementedError

    # -- its connection's, as ``pipe.ReceiverParty`` names them
    def write(self, data: Data) -> None:
        raise NotImplementedError

    def writeSequence(self, pieces: List[Data], size: int) -> None:
        raise NotImplementedError

    def room(self) -> int:
        raise NotImplementedError

    def held(self) -> int:
        raise NotImplementedError

    def taken(self) -> int:
        raise NotImplementedError

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        raise NotImplementedError

    def cut(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        self.request.unregisterProducer()
        self.request.finish()

    def reject(self, status: int, text: str, how: Outcome) -> None:
        request = self.request
        request.endedBy = how
        retry = [("Retry-After", "5")] if status == 503 else []
        request.write(errors.plain_reply(request, status, text, retry))
        request.finish()


@implementer(IPushProducer)
class ConnectionDownload(DirectWrites, Download):
    """A receiver on an HTTP/1.1 connection: body bytes go straight to its
    socket (:class:`fastpath.DirectWrites`); cut short, its response ends
    unframed and its connection closes; its hang-up seen while in its pipe
    (the pipe's watcher)."""

    def __init__(self, pipe: "Pipe", request: PipeRequestLike) -> None:
        super().__init__(pipe, request)
        # While its stream is quiet it is written nothing, and its connection
        # is not read either once its client sent more than Twisted buffers
        # behind the request in flight (the channel's read gate): only the
        # kernel knows it left (a FIN, a reset). Its FIN means it left, as
        # when the connection is read (PipeChannel.readConnectionLost).
        pipe.watcher.watch(self.transport)

    def _lost(self, reason: Failure) -> None:
        self.pipe.watcher.unwatch(self.transport)
        super()._lost(reason)

    def finish(self) -> None:
        # The connection may carry its next request: no longer the pipe's.
        self.pipe.watcher.unwatch(self.transport)
        super().finish()

    def reject(self, status: int, text: str, how: Outcome) -> None:
        self.pipe.watcher.unwatch(self.transport)
        super().reject(status, text, how)

    def headWritten(self) -> None:
        """Its response head is written: body bytes may now go straight to
        its socket (fastpath.DirectWrites)."""
        self.startDirect(_twisted.response_chunked(self.request))

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        """End before the response does: a chunked stream gets no last chunk,
        a counted one comes up short, so the client knows it is truncated."""
        self.request.endedBy = how
        self.pipe.watcher.unwatch(self.transport)  # its close is under way
        if self.request.producer is not None:
            self.request.unregisterProducer()
        if not self._chunked and not self.request.responseHeaders.hasHeader(b"content-length"):
            # Neither framing: the end of the connection ends the body, so a
            # clean FIN would pass the truncated stream off as whole (HTTP/1.0).
            reset(self.transport)
            return
        self._cut = close_failing(self.transport, clock)

    def cut(self) -> None:
        """End a receiver that stopped reading: it would never take what a
        graceful close must still send, so the connection is aborted (the
        response is truncated) at once, freeing what it holds."""
        self.request.endedBy = Outcome.ABORTED
        self.pipe.watcher.unwatch(self.transport)
        if self.request.producer is not None:
            self.request.unregisterProducer()
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()


class PartyBuilder(Protocol):
    """A request's channel, as the parties' maker sees it: the HTTP/1.1
    connection (``channel.PipeChannel``) or the HTTP/2 stream
    (``h2stream.H2Stream``), each building its own parties."""

    def makeSender(self, pipe: "Pipe", request: PipeRequestLike) -> Upload: ...

    def makeReceiver(self, pipe: "Pipe", request: PipeRequestLike) -> Download: ...


class HTTPParties:
    """Makes the parties of HTTP requests (``pipe.PartyMaker``): each
    request's channel builds its own."""

    def sender(self, pipe: "Pipe", request: object) -> Upload:
        # The HTTP layer hands the registry its requests.
        http = cast(PipeRequestLike, request)
        builder: PartyBuilder = http.channel
        return builder.makeSender(pipe, http)

    def receiver(self, pipe: "Pipe", request: object) -> Download:
        http = cast(PipeRequestLike, request)
        builder: PartyBuilder = http.channel
        return builder.makeReceiver(pipe, http)
