"""An HTTP/2 stream as the channel (and transport) of its request.

:class:`H2Stream` is to its :class:`H2Request` what ``channel.PipeChannel``
is to an HTTP/1.1 request: it implements what ``http.Request`` calls on its
channel (``writeHeaders``, ``write``, ``requestDone``, ``registerProducer``;
checked at import in _twisted.py) and what the parties call on their
transport, so routing, tokens, pages and the parties work unchanged. Its
connection, with the ``h2`` state machine, is ``http2.H2Channel``.

Outbound, a stream sends what its peer's windows allow and queues the
rest, pausing its producer (a receiver's party) meanwhile; what it says it
can take (``room``) also counts what its connection's transport holds
unsent; inbound, its window is opened only while the pipe reads its body
(``setReading``).

Its head is checked as ``PipeChannel`` checks an HTTP/1.1 one: the method a
token, the target visible ASCII, one host, at most ``--max-headers``
fields (431), ``content-length`` digits only, whatever h2 lets through.
"""

# twisted.web's request is untyped, and this module calls it from typed code.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, List, Optional, Protocol, Sequence, Tuple

import h2.connection
import h2.errors
import h2.exceptions
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from pipeserver import errors
from pipeserver.http import _twisted
from pipeserver.errors import Rejection
from pipeserver.domain.interfaces import Data, Outcome, Pacer
from pipeserver.http.parties import Download, PipeRequestLike, Upload
from pipeserver.domain.pipe import Pipe
from pipeserver.http.settings import SiteView
from pipeserver.http.request import STREAMED_METHODS, PipeRequest, expects_only_continue, target_ok

#: Seconds a failed response's queued bytes get before its stream is reset.
CLOSE_GRACE = 10.0

#: The bytes of a method (an RFC 9110 token).
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def is_token(value: bytes) -> bool:
    """Whether ``value`` is an RFC 9110 token (what a method must be)."""
    return bool(value) and not value.translate(None, _TOKEN)


def content_length(values: Sequence[bytes]) -> Optional[int]:
    """The one length ``content-length`` fields give, or -1 if they are
    not all the same plain digits (``0_10``, `` 10``, ``+10``: a malformed
    request, on every h2 release), or None without any."""
    if not values:
        return None
    if not all(value.isdigit() for value in values) or len(set(map(int, values))) != 1:
        return -1
    return int(values[0])


# Outbound headers HTTP/2 forbids (RFC 9113 8.2.2); Twisted adds some.
_CONNECTION_HEADERS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


class StreamConnection(Protocol):
    """What a stream uses of its connection (``http2.H2Channel``, which
    imports this module: the stream knows it only by this)."""

    @property
    def h2(self) -> h2.connection.H2Connection:
        """The sans-IO state machine (``_h2.FastH2Connection``)."""

    @property
    def site(self) -> SiteView:
        """The site (``site.PipeSite``) whose resource renders its request."""
    transport: Any
    clock: IReactorTime
    #: Each stream's window step, and how long a stream may wait.
    window: int
    idleTimeout: float
    #: How long a request whose body goes to no pipe may take to end.
    headerTimeout: float
    secure: bool
    paused: bool
    #: Bytes handed to h2 since the last flush, and whether DATA went out
    #: since the client's last WINDOW_UPDATE on the connection.
    unflushed: int
    sentSinceUpdate: bool
    #: Streams that wait for the connection's window, not their own.
    blocked: Dict[int, "H2Stream"]

    def flush(self) -> None: ...

    def wrote(self) -> None: ...

    def ack(self, streamID: int, size: int) -> None: ...

    def queue(self, delta: int) -> None: ...

    def sendRoom(self) -> int: ...

    def admitWaiting(self) -> bool: ...

    def waitingChanged(self, delta: int) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def streamClosed(self, stream: "H2Stream") -> None: ...


class H2Request(PipeRequest):
    """A PipeRequest on an HTTP/2 stream (``clientproto`` ``HTTP/2``).

    A response may end before the body has (a sender refused at once): the
    stream then ends, and the rest of the body is refused with
    ``RST_STREAM(NO_ERROR)`` (RFC 9113 8.1) rather than waited for."""

    def finish(self) -> None:
        if self.streamed and not self._bodyEnded:
            self._bodyEnded = True
            self.bodySink = None
        super().finish()


class H2Stream:
    """One stream: its request's channel and transport.

    It implements what ``http.Request`` calls on its channel (``writeHeaders``,
    ``write``, ``requestDone``, ``registerProducer``...), and what the parties
    call on their transport (``loseConnection``, ``abortConnection``). Body
    bytes it cannot send yet (the peer's window is shut) wait in its queue.
    """

    connected = True
    disconnecting = False

    def __init__(self, conn: StreamConnection, streamID: int) -> None:
        self.conn = conn
        self.streamID = streamID
        self.site = conn.site
        self.factory = conn.site
        # http.Request reads its transport from its channel.
        self.transport = self
        self.producer: Optional[IPushProducer] = None
        self._producerPaused = False
        self._queue: Deque[bytes] = collections.deque()
        #: Body and line bytes waiting for the peer's window or the
        #: connection's send room (changed only by :meth:`_queued`).
        self.queued = 0
        #: Whether DATA went out since the client's last WINDOW_UPDATE on
        #: this stream (its first is free: clients widen a new stream's).
        self.sentSinceUpdate = True
        #: A sender whose pipe does not read it yet (``H2Channel.waiting``).
        self.waiting = False
        #: The timer of a request whose body must end before it is served.
        self._ending: Optional[IDelayedCall] = None
        #: Bytes handed to the connection (the peer's window took them).
        self.written = 0
        self.localOpen = True
        self.remoteOpen = True
        self._endWhenSent = False
        #: Whether the body is read on (the window reopened as it arrives).
        self.reading = True
        self._windowOpened = False
        self._unacked = 0
        self.request = H2Request(self)

    # ---- the parties of its request (parties.HTTPParties asks)
    def makeSender(self, pipe: Pipe, request: PipeRequestLike) -> "StreamUpload":
        """A sender on this stream, held back by its window."""
        return StreamUpload(pipe, request, self)

    def makeReceiver(self, pipe: Pipe, request: PipeRequestLike) -> "StreamDownload":
        """A receiver on this stream, sent what its peer's windows take."""
        return StreamDownload(pipe, request, self)

    # ---- the request arrives
    def begin(self, headers: List[Tuple[bytes, bytes]], ended: bool) -> None:
        """Its HEADERS: build the request and render it, now if its body is
        streamed (PUT, POST) or there is none, else at the end of its body."""
        request = self.request
        # h2 has taken an END_STREAM on the HEADERS already.
        self.remoteOpen = not ended
        pseudo: Dict[bytes, bytes] = {}
        hosts: List[bytes] = []
        fields = Headers()
        for name, value in headers:
            if name.startswith(b":"):
                pseudo[name] = value
            elif name == b"host":
                hosts.append(value)
            else:
                fields.addRawHeader(name, value)
        authority = pseudo.get(b":authority")
        if authority is not None and not hosts:
            hosts.append(authority)
        for host in hosts:
            fields.addRawHeader(b"host", host)
        request.requestHeaders = fields
        method = pseudo.get(b":method", b"")
        path = pseudo.get(b":path", b"")
        length = content_length(fields.getRawHeaders(b"content-length", []))
        request.gotLength(0 if ended else length)
        rejection: Optional[Rejection] = None
        if len(headers) - len(pseudo) > self.site.settings.max_headers:
            rejection = errors.headers_too_large()
        elif (
            not is_token(method)
            or not path
            or not target_ok(path)
            or len(set(hosts)) != 1
            or length == -1
        ):
            rejection = errors.malformed()
        elif method in STREAMED_METHODS and not ended and not self.conn.admitWaiting():
            rejection = errors.h2_waiting_senders()
        else:
            rejection = self._expect(request, method, path, ended)
        if rejection is not None:
            self.reject(rejection, method, path)
            return
        if ended:
            request.requestReceived(method, path, b"HTTP/2")
        elif method in STREAMED_METHODS:
            # Until its pipe reads it, it may send the default window.
            self._setWaiting(True)
            request.dispatchEarly(method, path, b"HTTP/2")
            # Refused (no sink), it was answered and its stream reset
            # (H2Request.finish): no window for a body that goes nowhere.
            if request.bodySink is None:
                self._setWaiting(False)
            elif self.reading:
                self.openWindow()
        else:
            # Rendered once its body (read and dropped) has ended, which
            # must come within the header timeout (as an HTTP/1.1 request's
            # body must): a request that never ends keeps nothing for ever.
            self._method, self._path = method, path
            self._ending = self.conn.clock.callLater(self.conn.headerTimeout, self._neverEnded)
            self.openWindow()

    def _neverEnded(self) -> None:
        self._ending = None
        if self.remoteOpen:
            self.conn.rejected("h2_request_timeout")
            self.reset(h2.errors.ErrorCodes.CANCEL)

    def _setWaiting(self, waiting: bool) -> None:
        if waiting != self.waiting:
            self.waiting = waiting
            self.conn.waitingChanged(1 if waiting else -1)

    _method = b""
    _path = b""

    def _expect(
        self, request: H2Request, method: bytes, path: bytes, ended: bool
    ) -> Optional[Rejection]:
        """Expect: only ``100-continue``, answered with a 100 unless the
        head alone refuses the request (as ``PipeChannel`` does)."""
        expect = request.requestHeaders.getRawHeaders(b"expect", [])
        if not expects_only_continue(expect):
            return errors.expectation_failed()
        if not expect or ended:
            return None
        if method in STREAMED_METHODS:
            request.setRequestLine(method, path, b"HTTP/2")
            rejection = self.site.checkBeforeBody(request)
            if rejection is not None:
                return rejection
        self.conn.h2.send_headers(self.streamID, [(b":status", b"100")])
        self.conn.flush()
        return None

    def reject(self, rejection: Rejection, method: bytes, path: bytes) -> None:
        """Answer with ``rejection`` before rendering (a bad head)."""
        request = self.request
        if "method" not in vars(request):
            # Logged as the access line: never a byte a terminal acts on.
            request.setRequestLine(
                method if is_token(method) else b"-",
                path if path and target_ok(path) else b"-",
                b"HTTP/2",
            )
        self.conn.rejected(rejection.reason)
        request.write(rejection.apply(request))
        request.streamed = True
        request.finish()

    def dataReceived(self, data: bytes, flowLength: int) -> None:
        request = self.request
        if request.streamed and request.bodySink is not None:
            request.handleContentChunk(data)
        else:
            request.bodyBytes += len(data)
        if self.reading:
            self.conn.ack(self.streamID, flowLength)
        else:
            self._unacked += flowLength

    def remoteEnded(self) -> None:
        self.remoteOpen = False
        self._setWaiting(False)
        self._cancelEnding()
        request = self.request
        if self._method:
            request.requestReceived(self._method, self._path, b"HTTP/2")
        elif request.streamed and not request.finished:
            request.requestReceived(request.method, request.uri, b"HTTP/2")
        self._closeIfDone()

    # ---- flow control of the body
    def setReading(self, reading: bool) -> None:
        """Open the window as the body is passed on (True), or leave it to
        shut (False): the sender stops once it has sent what it may."""
        if reading == self.reading:
            return
        self.reading = reading
        if reading and self.remoteOpen:
            unacked, self._unacked = self._unacked, 0
            if unacked:
                self.conn.ack(self.streamID, unacked)
            self.openWindow()
            self.conn.wrote()

    def openWindow(self) -> None:
        """Open the window (shut at first) by ``--h2-window``, once."""
        if self._windowOpened or not self.remoteOpen:
            return
        self._windowOpened = True
        self._setWaiting(False)
        self.conn.ack(self.streamID, self.conn.window)

    # ---- what http.Request calls on its channel
    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        fields = [(b":status", code)]
        for name, values in headers.getAllRawHeaders():
            lower = name.lower()
            if lower in _CONNECTION_HEADERS:
                continue
            fields.extend((lower, value) for value in values)
        if not self.localOpen:
            return
        try:
            self.conn.h2.send_headers(self.streamID, fields)
        except h2.exceptions.ProtocolError:
            return  # reset by the client meanwhile
        self.conn.wrote()

    def write(self, data: bytes) -> None:
        self.send([data], len(data))

    def writeSequence(self, iovec: List[bytes]) -> None:
        self.send(list(iovec), sum(map(len, iovec)))

    def send(self, pieces: List[Data], size: int) -> None:
        """Body bytes: what the peer's window takes goes now, the rest is
        queued (and the producer paused until it has gone)."""
        if not self.localOpen or not size:
            return
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if type(data) is not bytes:
            data = bytes(data)
        if self._queue:
            self._queue.append(data)
            self._queued(len(data))
            return
        rest = self._sendNow(data)
        if rest:
            self._queue.append(rest)
            self._queued(len(rest))
            self._updateProducer()
        self.conn.wrote()

    def _queued(self, delta: int) -> None:
        """Every change of what this stream queues (its connection counts
        them all in one place, ``H2Channel.queue``)."""
        self.queued += delta
        self.conn.queue(delta)

    def _sendNow(self, data: bytes) -> bytes:
        """Send what the windows allow of ``data``; return the rest (the
        stream then waits for its window, or, in ``conn.blocked``, for the
        connection's). What the pipe writes is sized by :meth:`room`, which
        counts the transport's unsent bytes too."""
        channel = self.conn
        conn = channel.h2
        room = conn.local_flow_control_window(self.streamID)
        size = len(data)
        if room <= 0:
            self._wait()
            return data
        frame = conn.max_outbound_frame_size
        take = min(room, size)
        view = memoryview(data)
        offset = 0
        while offset < take:
            end = min(offset + frame, take)
            conn.send_data(self.streamID, view[offset:end])
            offset = end
        self.written += take
        channel.unflushed += take
        channel.sentSinceUpdate = self.sentSinceUpdate = True
        if take < size:
            self._wait()
            return data[take:]
        return b""

    def _wait(self) -> None:
        """Queued bytes wait: for this stream's own window (a WINDOW_UPDATE
        on it drains them), or, if that is open, for the connection's
        (``H2Channel.blocked``)."""
        stream = self.conn.h2.streams.get(self.streamID)
        if stream is not None and stream.outbound_flow_control_window > 0:
            self.conn.blocked[self.streamID] = self

    def drain(self) -> None:
        """The window or the connection opened: send what is queued."""
        if not self.localOpen:
            return
        while self._queue:
            data = self._queue.popleft()
            self._queued(-len(data))
            rest = self._sendNow(data)
            if rest:
                self._queue.appendleft(rest)
                self._queued(len(rest))
                break
        if not self._queue and self._failWhenSent:
            self._failWhenSent = False
            self.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        if not self._queue and self._endWhenSent:
            self._endWhenSent = False
            self._cancelDeadline()
            self._end()
        self._updateProducer()

    def _updateProducer(self) -> None:
        """Pause the producer while anything waits here or the connection's
        write buffer is full; resume it once neither holds."""
        producer = self.producer
        if producer is None:
            return
        blocked = bool(self._queue) or self.conn.paused
        if blocked and not self._producerPaused:
            self._producerPaused = True
            producer.pauseProducing()
        elif not blocked and self._producerPaused:
            self._producerPaused = False
            producer.resumeProducing()

    def room(self) -> int:
        """Bytes the peer's windows take at once."""
        if self._queue or not self.localOpen:
            return 0
        window = self.conn.h2.local_flow_control_window(self.streamID)
        return max(0, min(window, self.conn.sendRoom()))

    def requestDone(self, request: object) -> None:
        """The response is complete: END_STREAM once its bytes have gone.
        A client that never opens its window again must not keep the stream
        and what is queued for it: after the idle timeout it is reset, as
        an HTTP/1.1 connection that takes nothing is cut."""
        if self._queue:
            self._endWhenSent = True
            self._deadline = self.conn.clock.callLater(
                self.conn.idleTimeout, self.reset, h2.errors.ErrorCodes.CANCEL
            )
        else:
            self._end()

    def _end(self) -> None:
        if not self.localOpen:
            return
        self.localOpen = False
        conn = self.conn.h2
        try:
            conn.end_stream(self.streamID)
            if self.remoteOpen:
                # Answered before the body ended: the rest is not wanted.
                self.remoteOpen = False
                conn.reset_stream(self.streamID, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            self.remoteOpen = False  # the client closed it meanwhile
        self.conn.wrote()
        self._closeIfDone()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer
        self._producerPaused = False
        self._updateProducer()

    def unregisterProducer(self) -> None:
        self.producer = None

    def getPeer(self) -> Any:
        transport: Any = self.conn.transport
        return transport.getPeer()

    def getHost(self) -> Any:
        transport: Any = self.conn.transport
        return transport.getHost()

    def isSecure(self) -> bool:
        return self.conn.secure

    def loseConnection(self) -> None:
        """End the stream once what is queued has gone."""
        self.requestDone(None)

    def abortConnection(self) -> None:
        """Reset the stream (CANCEL): its client sees it fail."""
        self.reset(h2.errors.ErrorCodes.CANCEL)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.reset(h2.errors.ErrorCodes.PROTOCOL_ERROR)

    # ---- the end of a stream
    def reset(self, code: int) -> None:
        """End the stream with RST_STREAM ``code``, never END_STREAM: a
        response cut short must not pass for a whole one."""
        if self.localOpen or self.remoteOpen:
            self.localOpen = self.remoteOpen = False
            self._dropQueue()
            try:
                self.conn.h2.reset_stream(self.streamID, code)
            except h2.exceptions.ProtocolError:
                pass  # closed by the client meanwhile
            self.conn.wrote()
        # Later, as for a connection: the party ending it (a pipe failing
        # all its receivers) must not hear of it while it does.
        self.conn.clock.callLater(0, self._lost, Failure(ConnectionAborted()))

    #: When a response still queued here is given up (fail, requestDone).
    _deadline: Optional[IDelayedCall] = None

    def fail(self) -> None:
        """End the response short: what is queued still goes (for
        ``CLOSE_GRACE`` seconds at most), then RST_STREAM, never END_STREAM."""
        self.producer = None
        if not self._queue:
            self.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        self._endWhenSent = False
        self._failWhenSent = True
        self._cancelDeadline()
        self._deadline = self.conn.clock.callLater(
            CLOSE_GRACE, self.reset, h2.errors.ErrorCodes.INTERNAL_ERROR
        )

    _failWhenSent = False

    def peerReset(self) -> None:
        """Its client reset the stream: that party has left."""
        self.localOpen = self.remoteOpen = False
        self._dropQueue()
        self._lost(Failure(ConnectionLost("stream reset by the client")))

    def _dropQueue(self) -> None:
        self._queue.clear()
        if self.queued:
            self._queued(-self.queued)

    def _closeIfDone(self) -> None:
        if not self.localOpen and not self.remoteOpen:
            # Whatever ended it (an answer before the body ended: a refusal,
            # a wait that timed out), it neither waits nor sends any more.
            self._setWaiting(False)
            self._cancelEnding()
            self.conn.streamClosed(self)

    def _cancelDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _cancelEnding(self) -> None:
        ending, self._ending = self._ending, None
        if ending is not None and ending.active():
            ending.cancel()

    def _lost(self, reason: Failure) -> None:
        self._cancelDeadline()
        self._cancelEnding()
        self._setWaiting(False)
        self._dropQueue()
        self.connected = False
        self.conn.streamClosed(self)
        request = self.request
        if not request.finished and not _twisted.request_disconnected(request):
            request.connectionLost(reason)


class StreamUpload(Upload):
    """A sender on an HTTP/2 stream. Its pace is its stream's window, which
    the stream reopens only while the pipe reads (:meth:`setReading`): no
    read gate, no pacer, no hang-up watch (a reset stream or a lost
    connection is seen at once)."""

    def __init__(self, pipe: Pipe, request: PipeRequestLike, stream: H2Stream) -> None:
        super().__init__(pipe, request)
        self.stream = stream

    def setReading(self, reading: bool) -> None:
        if reading != self.reading:
            self.reading = reading
            self.stream.setReading(reading)

    def flush(self) -> None:
        self.stream.conn.flush()

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        # Its lines went ahead as DATA; the reset tells its client it failed.
        self.request.endedBy = how
        self.stream.abortConnection()


class StreamDownload(Download):
    """A receiver on an HTTP/2 stream, which sends what its peer's window
    takes and queues the rest, pausing the pipe meanwhile. A response cut
    short ends with RST_STREAM."""

    def __init__(self, pipe: Pipe, request: PipeRequestLike, stream: H2Stream) -> None:
        super().__init__(pipe, request)
        self.stream = stream

    def headWritten(self) -> None:
        self.stream.conn.flush()

    def write(self, data: Data) -> None:
        self.writeSequence([data], len(data))

    def writeSequence(self, pieces: List[Data], size: int) -> None:
        self.request.sentLength += size
        self.stream.send(pieces, size)

    def room(self) -> int:
        return self.stream.room()

    def held(self) -> int:
        return self.stream.queued

    def taken(self) -> int:
        return self.stream.written

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        self.request.endedBy = how
        if self.request.producer is not None:
            self.request.unregisterProducer()
        self.stream.fail()

    def cut(self) -> None:
        self.request.endedBy = Outcome.ABORTED
        if self.request.producer is not None:
            self.request.unregisterProducer()
        self.stream.abortConnection()
