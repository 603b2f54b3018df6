"""HTTP/2: one connection's streams, each the channel of a PipeRequest.

A connection turns to HTTP/2 at its first bytes (``PipeChannel`` hands it
over, see :func:`handover`): the prior-knowledge preface on a cleartext
listener, or ALPN ``h2`` on a TLS one. :class:`H2Channel` runs the sans-IO
``h2`` library on it; each stream is an :class:`H2Stream`, which is to its
:class:`H2Request` what ``PipeChannel`` is to an HTTP/1.1 request (and its
transport too), so routing, tokens, pages and the parties work unchanged.

Backpressure is flow control. A stream's receive window starts at 0
(``SETTINGS_INITIAL_WINDOW_SIZE``) and is opened by ``window`` bytes only
once the pipe reads its body, then by what the pipe has passed on while it
reads, so a sender's memory here is one window at most; the connection's
window is kept wide, so a paused stream never holds back its neighbours.
Outbound, a stream sends what its peer's window allows and queues the rest,
and its producer (the receiver's party) is paused while anything is queued
or the connection's own write buffer is full.

Floods end the connection with GOAWAY, never the server: see
:class:`Budget` and ``H2Channel._spend``. Design and measurements:
docs/HTTP2.md.
"""

# twisted.web's request is untyped, and this module calls it from typed code.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, List, Optional, Tuple

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hyperframe.frame
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from pipeserver import errors
from pipeserver.channel import STREAMED_METHODS, PipeChannel, PipeRequest, target_ok
from pipeserver.errors import Rejection

log = Logger()

#: What a client sends first to speak HTTP/2 without negotiation (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Bytes a stream's window is opened by at a time (``--h2-window``).
DEFAULT_WINDOW = 256 * 1024
#: Streams one connection may have open at once (``--h2-max-streams``).
DEFAULT_MAX_STREAMS = 100
#: The connection's receive window: wide, and topped up as it is used, so
#: only the streams' windows (opened as the pipe reads) bound what arrives.
CONNECTION_WINDOW = 1 << 30
#: Seconds a failed response's queued bytes get before its stream is reset.
CLOSE_GRACE = 10.0

# Outbound headers HTTP/2 forbids (RFC 9113 8.2.2); Twisted adds some.
_CONNECTION_HEADERS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


# h2 4.x builds the repr of every frame it receives, even with logging off
# ("Received frame: %s" in H2Connection._receive_frame), and a DATA frame's
# repr hexlifies its payload: about a third of the CPU of a transfer. The
# payload is never logged here, so its repr is its length.
def _data_repr(self: hyperframe.frame.DataFrame) -> str:
    return f"<{len(self.data)} bytes>"


hyperframe.frame.DataFrame._body_repr = _data_repr  # type: ignore[method-assign,assignment]


class HeaderBlockBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, with a cap on the bytes of a header block still
    waiting for its END_HEADERS. h2 caps only the CONTINUATION frames (64,
    so up to 1 MiB per connection) and the header list once decoded: a
    CONTINUATION flood is ended here, at twice ``--max-header-bytes``
    (HPACK rarely makes a header list bigger than its encoding)."""

    def __init__(self, cap: int) -> None:
        super().__init__(server=True)
        self.cap = cap

    def _update_header_buffer(self, f: Any) -> Any:
        # (h2 4.x's own hook; checked at import below.)
        frame = super()._update_header_buffer(f)
        pending = self._headers_buffer
        if pending and sum(len(part.data) for part in pending) > self.cap:
            raise h2.exceptions.DenialOfServiceError("Header block too large.")
        return frame


if not hasattr(h2.frame_buffer.FrameBuffer, "_update_header_buffer"):  # pragma: no cover
    raise ImportError("h2's FrameBuffer changed: see http2.HeaderBlockBuffer")


class _Settings(h2.settings.Settings):
    """Our SETTINGS, which advertise ``MAX_CONCURRENT_STREAMS`` while h2
    enforces only a ceiling past it (``ceiling``), with GOAWAY, for clients
    that ignore it: up to that, the extra stream gets RST_STREAM
    (REFUSED_STREAM) from H2Channel, as RFC 9113 5.1.2 asks."""

    ceiling = 0

    @property
    def max_concurrent_streams(self) -> int:
        return self.ceiling

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


class Budget:
    """A token bucket: ``burst`` events at once, then ``rate`` a second.

    Each kind of frame a flood is made of (resets, PING/SETTINGS and other
    control frames, empty DATA, new streams) spends from its connection's
    budget for it; a connection that overdraws one gets GOAWAY."""

    __slots__ = ("clock", "burst", "rate", "tokens", "at")

    def __init__(self, clock: Any, burst: float, rate: float) -> None:
        self.clock = clock
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self.at = clock.seconds()

    def spend(self) -> bool:
        """Take one token; False once there is none left."""
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


#: (burst, per second) of each budget. Generous for clients that behave:
#: a browser sends a few SETTINGS and PINGs, cancels a few streams.
BUDGETS = {
    "reset": (200.0, 50.0),  # RST_STREAM from the client (rapid reset)
    "control": (100.0, 20.0),  # PING, SETTINGS, PRIORITY, unknown frames
    "empty": (100.0, 20.0),  # DATA without payload nor END_STREAM
    "stream": (1000.0, 200.0),  # streams opened
}


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
    #: No read gate: a stream is held back by its window (parties.H2Upload).
    gate = None

    def __init__(self, conn: "H2Channel", streamID: int) -> None:
        self.conn = conn
        self.streamID = streamID
        self.site = conn.site
        self.factory = conn.site
        # http.Request reads its transport from its channel.
        self.transport = self
        self.producer: Optional[IPushProducer] = None
        self._producerPaused = False
        self._queue: Deque[bytes] = collections.deque()
        #: Body and line bytes waiting for the peer's window.
        self.queued = 0
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
        length: Optional[int] = None
        lengths = fields.getRawHeaders(b"content-length")
        if ended:
            length = 0
        elif lengths:
            try:
                length = int(lengths[0])
            except ValueError:
                length = None
        request.gotLength(length)
        rejection: Optional[Rejection] = None
        if not path or not target_ok(path) or len(set(hosts)) != 1:
            rejection = errors.malformed()
        else:
            rejection = self._expect(request, method, path, ended)
        if rejection is not None:
            self.reject(rejection, method, path)
            return
        if ended:
            request.requestReceived(method, path, b"HTTP/2")
        elif method in STREAMED_METHODS:
            request.dispatchEarly(method, path, b"HTTP/2")
            if request.bodySink is None:
                # Answered already, or about to be: its body goes nowhere.
                self.refuseBody()
            elif self.reading:
                self.openWindow()
        else:
            # Rendered once its body (read and dropped) has ended.
            self._method, self._path = method, path
            self.openWindow()

    _method = b""
    _path = b""

    def _expect(
        self, request: H2Request, method: bytes, path: bytes, ended: bool
    ) -> Optional[Rejection]:
        """Expect: only ``100-continue``, answered with a 100 unless the
        head alone refuses the request (as ``PipeChannel`` does)."""
        expect = request.requestHeaders.getRawHeaders(b"expect", [])
        tokens = {t.strip().lower() for v in expect for t in v.split(b",")} - {b""}
        if not tokens <= {b"100-continue"}:
            return errors.expectation_failed()
        if not tokens or ended:
            return None
        check = getattr(self.site.resource, "checkBeforeBody", None)
        if check is not None and method in STREAMED_METHODS:
            request.setRequestLine(method, path, b"HTTP/2")
            rejection: Optional[Rejection] = check(request)
            if rejection is not None:
                return rejection
        self.conn.h2.send_headers(self.streamID, [(b":status", b"100")])
        self.conn.flush()
        return None

    def reject(self, rejection: Rejection, method: bytes, path: bytes) -> None:
        """Answer with ``rejection`` before rendering (a bad head)."""
        request = self.request
        if "method" not in vars(request):
            request.setRequestLine(method, path, b"HTTP/2")
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
            if not self.conn.inEvents:
                self.conn.flush()

    def openWindow(self) -> None:
        """Open the window (shut at first) by ``--h2-window``, once."""
        if self._windowOpened or not self.remoteOpen:
            return
        self._windowOpened = True
        self.conn.ack(self.streamID, self.conn.window)

    def refuseBody(self) -> None:
        """The body is not wanted: whatever comes is dropped, and the stream
        is reset (NO_ERROR) once our answer is out."""
        self.reading = True
        self._refused = True

    _refused = False

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
        if not self.conn.inEvents:
            self.conn.flush()

    def write(self, data: bytes) -> None:
        self.send([data], len(data))

    def writeSequence(self, iovec: List[bytes]) -> None:
        self.send(list(iovec), sum(map(len, iovec)))

    def send(self, pieces: List[Any], size: int) -> None:
        """Body bytes: what the peer's window takes goes now, the rest is
        queued (and the producer paused until it has gone)."""
        if not self.localOpen or not size:
            return
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if type(data) is not bytes:
            data = bytes(data)
        if self._queue:
            self._queue.append(data)
            self.queued += len(data)
            return
        rest = self._sendNow(data)
        if rest:
            self._queue.append(rest)
            self.queued += len(rest)
            self._updateProducer()
        if not self.conn.inEvents:
            self.conn.flush()

    def _sendNow(self, data: bytes) -> bytes:
        """Send what the window allows of ``data``; return the rest."""
        conn = self.conn.h2
        room = conn.local_flow_control_window(self.streamID)
        if room <= 0:
            return data
        frame = conn.max_outbound_frame_size
        size = len(data)
        take = min(room, size)
        view = memoryview(data)
        offset = 0
        while offset < take:
            end = min(offset + frame, take)
            conn.send_data(self.streamID, view[offset:end])
            offset = end
        self.written += take
        return data[take:] if take < size else b""

    def drain(self) -> None:
        """The window or the connection opened: send what is queued."""
        if not self.localOpen:
            return
        while self._queue:
            data = self._queue.popleft()
            self.queued -= len(data)
            rest = self._sendNow(data)
            if rest:
                self._queue.appendleft(rest)
                self.queued += len(rest)
                break
        if not self._queue and self._failWhenSent:
            self._failWhenSent = False
            self.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        if not self._queue and self._endWhenSent:
            self._endWhenSent = False
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
        return max(0, self.conn.h2.local_flow_control_window(self.streamID))

    def requestDone(self, request: object) -> None:
        """The response is complete: END_STREAM once its bytes have gone."""
        if self._queue:
            self._endWhenSent = True
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
        if not self.conn.inEvents:
            self.conn.flush()
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
            self._queue.clear()
            self.queued = 0
            try:
                self.conn.h2.reset_stream(self.streamID, code)
            except h2.exceptions.ProtocolError:
                pass  # closed by the client meanwhile
            if not self.conn.inEvents:
                self.conn.flush()
        # Later, as for a connection: the party ending it (a pipe failing
        # all its receivers) must not hear of it while it does.
        self.conn.clock.callLater(0, self._lost, Failure(ConnectionAborted()))

    _failing: Optional[IDelayedCall] = None

    def fail(self) -> None:
        """End the response short: what is queued still goes (for
        ``CLOSE_GRACE`` seconds at most), then RST_STREAM, never END_STREAM."""
        self.producer = None
        if not self._queue:
            self.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        self._endWhenSent = False
        self._failWhenSent = True
        self._failing = self.conn.clock.callLater(
            CLOSE_GRACE, self.reset, h2.errors.ErrorCodes.INTERNAL_ERROR
        )

    _failWhenSent = False

    def peerReset(self) -> None:
        """Its client reset the stream: that party has left."""
        self.localOpen = self.remoteOpen = False
        self._queue.clear()
        self.queued = 0
        self._lost(Failure(ConnectionLost("stream reset by the client")))

    def _closeIfDone(self) -> None:
        if not self.localOpen and not self.remoteOpen:
            self.conn.streamClosed(self)

    def _lost(self, reason: Failure) -> None:
        failing, self._failing = self._failing, None
        if failing is not None and failing.active():
            failing.cancel()
        self.connected = False
        self.conn.streamClosed(self)
        request = self.request
        if not request.finished and not request._disconnected:
            request.connectionLost(reason)


@implementer(IPushProducer)
class H2Channel(Protocol):
    """An HTTP/2 connection: the ``h2`` state machine and its streams.

    It is its transport's producer: while the transport's write buffer is
    full it stops reading and pauses every stream's producer. It counts as
    a channel of its site (``site.channels``) so a shutdown drains it: new
    streams are then refused, and GOAWAY tells the client so.
    """

    inEvents = False
    paused = False
    closing = False

    def __init__(self, site: Any, window: int, maxStreams: int) -> None:
        self.site = site
        self.factory = site
        self.window = window
        self.maxStreams = maxStreams
        self.clock = site.reactor
        self.streams: Dict[int, H2Stream] = {}
        self._acks: Dict[int, int] = {}
        self._idle: Optional[IDelayedCall] = None
        self.budgets = {name: Budget(self.clock, *spec) for name, spec in BUDGETS.items()}
        self.secure = False

    # ---- the connection
    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.secure = ISSLTransport.providedBy(transport)
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = self.h2 = h2.connection.H2Connection(config=config)
        header_bytes = int(getattr(self.site, "totalHeadersSize", 16384))
        codes = h2.settings.SettingCodes
        conn.local_settings = _Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: self.maxStreams,
                codes.MAX_HEADER_LIST_SIZE: header_bytes,
            },
        )
        conn.local_settings.ceiling = 2 * self.maxStreams + 16
        conn.decoder.max_header_list_size = header_bytes
        conn.incoming_buffer = HeaderBlockBuffer(2 * header_bytes)
        conn.initiate_connection()
        # Streams' windows shut at first. Sent as a change, which h2 applies
        # once the client acknowledges it: until then the client may send a
        # stream the default 64 KiB, as about one read of HTTP/1.1.
        conn.update_settings({codes.INITIAL_WINDOW_SIZE: 0})
        conn.increment_flow_control_window(CONNECTION_WINDOW)
        transport.registerProducer(self, True)
        channels = getattr(self.site, "channels", None)
        if channels is not None:
            channels.add(self)
        self._idleFor()
        self.flush()

    @property
    def requests(self) -> List[H2Stream]:
        """Its open streams (a shutdown waits for them)."""
        return list(self.streams.values())

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.closing and not self.streams:
            return
        self.inEvents = True
        try:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as failure:
                # h2 has queued its GOAWAY.
                log.info("HTTP/2 connection ended: {why}", why=failure)
                self._drop()
                return
            for event in events:
                self._event(event)
                if self.closing and self._calm:
                    return
            self._sendAcks()
        finally:
            self.inEvents = False
            if self.transport is not None:
                self.flush()

    _calm = False
    #: The priority that came with the last request's HEADERS.
    _opened: Optional[h2.events.PriorityUpdated] = None

    def _event(self, event: h2.events.Event) -> None:
        stream: Optional[H2Stream]
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if not event.data and event.stream_ended is None and not self._spend("empty"):
                return
            if stream is not None:
                stream.dataReceived(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.RequestReceived):
            if not self._spend("stream"):
                return
            if self.closing or len(self.streams) >= self.maxStreams:
                self.h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            self._stopIdle()
            self._opened = event.priority_updated
            stream = self.streams[event.stream_id] = H2Stream(self, event.stream_id)
            stream.begin(list(event.headers), event.stream_ended is not None)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.remoteOpen:
                stream.remoteEnded()
        elif isinstance(event, h2.events.StreamReset):
            if not self._spend("reset"):
                return
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.peerReset()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.drain()
            else:
                self._drainAll()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if self._spend("control"):
                self._drainAll()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client opens no new stream; those open go on (RFC 9113
            # 6.8). h2 closes its state machine on a GOAWAY it receives and
            # would send nothing more: it is put back, and new streams are
            # refused here.
            self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
            self.closing = True
            if not self.streams:
                self._drop()
        elif isinstance(event, h2.events.TrailersReceived):
            pass  # the StreamEnded that follows ends the body
        elif isinstance(event, h2.events.PriorityUpdated):
            # A browser sets a priority on each request's HEADERS: only
            # PRIORITY frames of their own count as control frames.
            if event is not self._opened:
                self._spend("control")
        elif isinstance(
            event,
            (
                h2.events.PingReceived,
                h2.events.PingAckReceived,
                h2.events.UnknownFrameReceived,
                h2.events.SettingsAcknowledged,
                h2.events.AlternativeServiceAvailable,
            ),
        ):
            self._spend("control")

    def _spend(self, budget: str) -> bool:
        """Spend from ``budget``; past it the connection is a flood, and ends."""
        if self.budgets[budget].spend():
            return True
        if not self._calm:
            self._calm = True
            log.info("HTTP/2 flood ({kind}): connection ended", kind=budget)
            self.goAway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._drop()
        return False

    def ack(self, streamID: int, size: int) -> None:
        """Reopen ``streamID``'s window by ``size`` (sent with the others)."""
        if size:
            self._acks[streamID] = self._acks.get(streamID, 0) + size
            if not self.inEvents:
                self._sendAcks()
                self.flush()

    def _sendAcks(self) -> None:
        acks, self._acks = self._acks, {}
        conn = self.h2
        for streamID, size in acks.items():
            stream = self.streams.get(streamID)
            if stream is None or not stream.remoteOpen:
                continue
            try:
                conn.increment_flow_control_window(size, streamID)
            except h2.exceptions.ProtocolError:
                pass  # closed meanwhile: nothing more will come
        # The connection's window is topped up as it is used, whatever the
        # streams: a stream whose window is shut holds back only itself.
        if conn.inbound_flow_control_window < CONNECTION_WINDOW // 2:
            conn.increment_flow_control_window(
                CONNECTION_WINDOW - conn.inbound_flow_control_window
            )

    def _drainAll(self) -> None:
        for stream in list(self.streams.values()):
            stream.drain()

    def rejected(self, reason: str) -> None:
        registry = getattr(self.site, "registry", None)
        if registry is not None:
            registry.observer.rejected("", reason)

    def streamClosed(self, stream: H2Stream) -> None:
        if self.streams.get(stream.streamID) is stream:
            del self.streams[stream.streamID]
            if not self.streams:
                if self.closing:
                    self.loseConnection()
                else:
                    self._idleFor()

    # ---- idle connections
    def _idleFor(self) -> None:
        timeout = getattr(self.site, "timeout", None)
        if timeout and self._idle is None and self.transport is not None:
            self._idle = self.clock.callLater(timeout, self._idleTimeout)

    def _stopIdle(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and idle.active():
            idle.cancel()

    def _idleTimeout(self) -> None:
        self._idle = None
        if not self.streams:
            self.loseConnection()

    # ---- the end
    def goAway(self, code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Tell the client to open no more streams: a shutdown (NO_ERROR;
        its open streams go on, new ones are refused) or a flood (the
        connection ends)."""
        if self.transport is None:
            return
        self.closing = True
        if code != h2.errors.ErrorCodes.NO_ERROR:
            try:
                self.h2.close_connection(error_code=code)
            except h2.exceptions.ProtocolError:
                pass
            self.flush()
            return
        # h2's own GOAWAY would close its state machine, and the streams
        # still open could not go on: the frame is written here instead.
        self.flush()
        frame = hyperframe.frame.GoAwayFrame(stream_id=0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = code
        self.transport.write(frame.serialize())
        if not self.streams:
            self._drop()

    def loseConnection(self) -> None:
        """GOAWAY, then close once our bytes have gone."""
        if self.transport is None:
            return
        if not self.closing:
            self.closing = True
            try:
                self.h2.close_connection()
            except h2.exceptions.ProtocolError:
                pass
        self._drop()

    def _drop(self) -> None:
        transport: Any = self.transport
        if transport is None:
            return
        self.flush()
        transport.loseConnection()
        self._abortLater = self.clock.callLater(15.0, self._abort)

    _abortLater: Optional[IDelayedCall] = None

    def _abort(self) -> None:
        self._abortLater = None
        transport: Any = self.transport
        if transport is not None and getattr(transport, "connected", False):
            transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopIdle()
        later, self._abortLater = self._abortLater, None
        if later is not None and later.active():
            later.cancel()
        channels = getattr(self.site, "channels", None)
        if channels is not None:
            channels.discard(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.localOpen = stream.remoteOpen = False
            stream._lost(reason)
        self.transport = None

    # ---- IPushProducer: our transport's write buffer
    def pauseProducing(self) -> None:
        if self.paused:
            return
        self.paused = True
        transport: Any = self.transport
        if transport is not None:
            transport.pauseProducing()
        for stream in list(self.streams.values()):
            stream._updateProducer()

    def resumeProducing(self) -> None:
        if not self.paused:
            return
        self.paused = False
        transport: Any = self.transport
        if transport is not None:
            transport.resumeProducing()
        self._drainAll()

    def stopProducing(self) -> None:
        pass


def wants_h2(transport: Any, data: bytes) -> Optional[bool]:
    """Whether a connection whose first bytes are ``data`` speaks HTTP/2:
    True (ALPN chose h2, or the preface), False, or None while ``data`` is
    still a beginning of the preface."""
    if getattr(transport, "negotiatedProtocol", None) == b"h2":
        return True
    if data.startswith(PREFACE):
        return True
    if PREFACE.startswith(data):
        return None
    return False


def handover(old: PipeChannel, transport: Any, data: bytes) -> bool:
    """Give ``transport`` (whose protocol is ``old``, a fresh PipeChannel)
    to a new :class:`H2Channel`, and feed it ``data``. False if the
    transport cannot change protocols (then HTTP/1.1 goes on)."""
    site = old.site
    channel = H2Channel(
        site,
        int(getattr(site, "h2Window", DEFAULT_WINDOW)),
        int(getattr(site, "h2MaxStreams", DEFAULT_MAX_STREAMS)),
    )
    if getattr(transport, "wrappedProtocol", None) is old:  # TLS
        transport.wrappedProtocol = channel
    elif getattr(transport, "protocol", None) is old:  # TCP, Unix
        transport.protocol = channel
    else:
        return False
    old.leave()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return True
