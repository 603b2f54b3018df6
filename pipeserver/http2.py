"""HTTP/2: one connection's streams, each the channel of a PipeRequest.

A connection turns to HTTP/2 at its first bytes (``PipeChannel`` hands it
over, see :func:`handover`): the prior-knowledge preface on a cleartext
listener, or ALPN ``h2`` on a TLS one. :class:`H2Channel` runs the sans-IO
``h2`` library on it; each stream is an ``h2stream.H2Stream``, which is to
its request what ``PipeChannel`` is to an HTTP/1.1 request (and its
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

from typing import Any, Dict, List, Optional

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hyperframe.frame
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IDelayedCall, IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pipeserver.channel import PipeChannel
from pipeserver.h2fast import FastH2Connection
from pipeserver.h2stream import H2Stream

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
#: Seconds a connection ended for a flood is read (and dropped) so that its
#: GOAWAY gets through, before it is aborted.
LINGER = 2.0
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
    #: Ended for a flood: what still comes is dropped unread (``_linger``).
    discarding = False

    def __init__(self, site: Any, window: int, maxStreams: int) -> None:
        self.site = site
        self.factory = site
        self.window = window
        self.maxStreams = maxStreams
        self.clock = site.reactor
        #: Seconds a connection without streams is kept (the site's idle
        #: timeout), and a finished response waits for a shut window.
        self.idleTimeout = float(getattr(site, "timeout", None) or 60.0)
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
        conn = self.h2 = FastH2Connection(config=config)
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

    def wrote(self) -> None:
        """A stream wrote: out now, unless we are amid the client's frames
        (then once they are all handled, with what they caused)."""
        if not self.inEvents:
            self.flush()

    def flush(self) -> None:
        # DATA frames as header + payload buffers, unjoined (h2fast.py).
        data = self.h2.pending()
        if data:
            self.transport.writeSequence(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.discarding or (self.closing and not self.streams):
            return
        self.inEvents = True
        try:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as failure:
                # h2 has queued its GOAWAY.
                log.info("HTTP/2 connection ended: {why}", why=failure)
                if isinstance(failure, h2.exceptions.DenialOfServiceError):
                    self.rejected("h2_headers_too_large")
                else:
                    self.rejected("h2_protocol_error")
                self._linger()
                return
            for event in events:
                self._event(event)
                if self._calm:
                    return  # a flood: the rest is not looked at
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
                self.rejected("h2_refused_stream")
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
            self.rejected(f"h2_flood_{budget}")
            self.goAway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._linger()
        return False

    def _linger(self) -> None:
        """End the connection so its GOAWAY arrives: closing with the rest
        of a flood unread would have our kernel answer with a reset, which
        can destroy the GOAWAY before the client reads it. So our side is
        shut, what still comes is read and dropped, and the connection is
        aborted after ``LINGER`` seconds if the client does not close it."""
        transport: Any = self.transport
        shut = getattr(transport, "loseWriteConnection", None)
        if shut is None:
            self._drop()
            return
        self.flush()
        self.discarding = True
        shut()
        self._abortLater = self.clock.callLater(LINGER, self._abort)
        # Its parties leave now, not when it closes.
        self._endStreams(Failure(ConnectionAborted("HTTP/2 flood")))

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
        """Count a refusal before any project is known (metrics'
        ``pipeserver_rejections_total``, project "")."""
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
        if self._idle is None and self.transport is not None:
            self._idle = self.clock.callLater(self.idleTimeout, self._idleTimeout)

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
        self._endStreams(reason)
        self.transport = None

    def _endStreams(self, reason: Failure) -> None:
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.localOpen = stream.remoteOpen = False
            stream._lost(reason)

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
