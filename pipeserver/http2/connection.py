"""HTTP/2: one connection's streams, each the channel of a PipeRequest.

A connection turns to HTTP/2 at its first bytes (``PipeChannel`` hands it
over, see :func:`handover`): the prior-knowledge preface on a cleartext
listener, or ALPN ``h2`` on a TLS one. :class:`H2Channel` runs the sans-IO
``h2`` library on it (through _h2.py, which holds every private name of h2
it needs); each stream is an ``h2stream.H2Stream``, which is to its request
what ``PipeChannel`` is to an HTTP/1.1 request (and its transport too), so
routing, tokens, pages and the parties work unchanged.

Backpressure is flow control. A stream's receive window is h2's default
(65,535 bytes: never shrunk by a SETTINGS change, which would drive the
window of a client that already sent negative, SPEC §11); once the pipe
reads the body it is opened by ``window`` bytes, then by what the pipe has
passed on while it reads, so a sender's memory here is about one window.
What waiting senders may send before their pipe reads them (the default
window each) is bounded per connection and per client
(:data:`WAITING_PER_CONNECTION`, :data:`WAITING_PER_CLIENT`). The
connection's window is kept wide, so a paused stream never holds back its
neighbours.

Outbound, a stream sends what its peer's windows allow and queues the rest;
its producer (the receiver's party) is paused meanwhile, and while the
transport's buffer is full. What the pipe may write to it at once counts
the transport's unsent bytes (:data:`SEND_BUFFER`).
What a connection queues for its client goes through one method,
:meth:`H2Channel.queue`; past :data:`QUEUE_LIMIT` its new streams are
refused.

Floods end the connection with GOAWAY, never the server: see
:class:`Budget`, :class:`Peers` (the budgets belong to the client address,
not the connection) and ``H2Channel._spend``. Design and measurements:
docs/HTTP2.md.
"""

# twisted.web's request is untyped, and this module calls it from typed code.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import collections
import typing
from typing import Any, Dict, List, Optional

import h2.config
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pipeserver.http1.channel import PipeChannel
from pipeserver.http.connections import Tab, uncounted_tab
from pipeserver.http.fastpath import buffered_bytes, read_freely
from pipeserver.http2._h2 import FastH2Connection
from pipeserver.http2.stream import H2Stream
from pipeserver.http.settings import SiteView

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
#: A stream's receive window until its pipe reads it: h2's default, which
#: a client may fill before it has seen our SETTINGS.
DEFAULT_STREAM_WINDOW = 65535
#: Bytes a connection's transport may hold unsent for the pipe to write
#: more to its streams (``H2Stream.room``, which sizes an HTTP/1.1 sender's
#: reads): a receiver that opens a huge window and reads nothing holds
#: about this and a read, not a sender's 1 MiB read.
SEND_BUFFER = 128 * 1024
#: Bytes a connection may hold for its client (queued for a window or the
#: transport) before its new streams are refused (RST_STREAM
#: REFUSED_STREAM): a client that reads nothing cannot make the server hold
#: a page per stream.
QUEUE_LIMIT = 1 << 20
#: Senders (PUT, POST streams) whose pipe does not read them yet, each of
#: which may send the default window, per connection and per client
#: address; past either, a new one gets 503 (``h2_waiting_senders``).
WAITING_PER_CONNECTION = 16
WAITING_PER_CLIENT = 32


class Budget:
    """A token bucket: ``burst`` events at once, then ``rate`` a second.

    Each kind of frame a flood is made of (resets, PING/SETTINGS and other
    control frames, empty DATA, new streams, frames that change nothing)
    spends from its client's budget for it; a connection that overdraws one
    gets GOAWAY."""

    __slots__ = ("clock", "burst", "rate", "tokens", "at")

    def __init__(self, clock: IReactorTime, burst: float, rate: float) -> None:
        self.clock = clock
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self.at = clock.seconds()

    def spend(self, count: int = 1) -> bool:
        """Take ``count`` tokens; False once there are not enough left."""
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < count:
            self.tokens = 0
            return False
        self.tokens -= count
        return True


#: (burst, per second) of each budget. Generous for clients that behave:
#: a browser sends a few SETTINGS and PINGs, cancels a few streams.
BUDGETS = {
    "reset": (200.0, 50.0),  # RST_STREAM from the client (rapid reset)
    "control": (100.0, 20.0),  # PING, SETTINGS, PRIORITY, unknown frames
    "empty": (100.0, 20.0),  # DATA without payload nor END_STREAM
    "stream": (1000.0, 200.0),  # streams opened
    # Frames that change nothing: those h2 handles without an event (a
    # WINDOW_UPDATE, RST_STREAM or DATA on a closed stream), and a
    # WINDOW_UPDATE when nothing was sent since the last one.
    # (About one a stream is usual: a client's WINDOW_UPDATE for the last
    # bytes of a response that has ended.)
    "silent": (1000.0, 200.0),
}
#: Control frames every connection sends once: its SETTINGS, its ack of
#: ours, its GOAWAY as it leaves. The first of each is free.
ONCE_PER_CONNECTION = (
    h2.events.RemoteSettingsChanged,
    h2.events.SettingsAcknowledged,
    h2.events.ConnectionTerminated,
)
#: Seconds after which every budget is full again.
REFILL = max(burst / rate for burst, rate in BUDGETS.values())


class Peer:
    """What the HTTP/2 connections of one client address share: their
    budgets, and how many of their senders wait (``waiting``)."""

    __slots__ = ("budgets", "connections", "waiting")

    def __init__(self, clock: IReactorTime) -> None:
        self.budgets = {name: Budget(clock, *spec) for name, spec in BUDGETS.items()}
        self.connections = 0
        self.waiting = 0


class Peers:
    """Every client address's :class:`Peer`, so a client that opens a new
    connection does not get fresh budgets. A peer is forgotten once its
    last connection has been gone for :data:`REFILL` seconds (by then its
    budgets would be full again)."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.peers: Dict[str, Peer] = {}
        #: Peers without a connection, oldest first: when the last left.
        self._idle: Dict[str, float] = collections.OrderedDict()

    def join(self, key: Optional[str]) -> Peer:
        """The peer of a new connection from ``key`` (None: a peer of its
        own, as for a trusted proxy's connections)."""
        self._prune()
        if key is None:
            peer = Peer(self.clock)
        else:
            found = self.peers.get(key)
            if found is None:
                found = self.peers[key] = Peer(self.clock)
            self._idle.pop(key, None)
            peer = found
        peer.connections += 1
        return peer

    def leave(self, key: Optional[str], peer: Peer) -> None:
        peer.connections -= 1
        if key is not None and peer.connections <= 0 and self.peers.get(key) is peer:
            self._idle[key] = self.clock.seconds()

    def _prune(self) -> None:
        now = self.clock.seconds()
        while self._idle:
            key, since = next(iter(self._idle.items()))
            if now - since < REFILL:
                return
            del self._idle[key]
            self.peers.pop(key, None)


class H2Site(SiteView, typing.Protocol):
    """What an HTTP/2 connection reads of its site (``site.PipeSite``)."""

    #: What one client's HTTP/2 connections share.
    h2Peers: Peers


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

    def __init__(self, site: "H2Site") -> None:
        self.site = site
        self.factory = site
        settings = self.settings = site.settings
        self.window = settings.h2_window
        self.maxStreams = settings.h2_max_streams
        self.clock = site.reactor
        #: Seconds a connection without streams is kept (the site's idle
        #: timeout, ``--idle-timeout``), and a finished response waits for
        #: a shut window.
        timeout = site.timeOut
        self.idleTimeout = float(timeout) if timeout else 60.0
        #: Seconds the client has to acknowledge our SETTINGS.
        self.settingsTimeout = float(settings.header_timeout or 20.0)
        #: Seconds a request whose body goes to no pipe has to end
        #: (``--header-timeout``, as over HTTP/1.1).
        self.headerTimeout = float(settings.header_timeout or 20.0)
        self.streams: Dict[int, H2Stream] = {}
        #: Streams whose queue waits for the connection's window, not for
        #: their own.
        self.blocked: Dict[int, H2Stream] = {}
        #: Bytes queued in its streams for the client (see :meth:`queue`).
        self.queued = 0
        #: Bytes given to h2 since the last flush.
        self.unflushed = 0
        #: Senders of this connection whose pipe does not read them yet.
        self.waiting = 0
        #: Whether DATA went out since the client's last WINDOW_UPDATE on
        #: the connection (one without is a frame that changes nothing; a
        #: client's first, which widens the window, is free).
        self.sentSinceUpdate = True
        #: Which of ONCE_PER_CONNECTION this connection has had.
        self._once: set[type] = set()
        self._acks: Dict[int, int] = {}
        self._idle: Optional[IDelayedCall] = None
        self._settingsTimer: Optional[IDelayedCall] = None
        #: Runs while a header block has begun and not ended.
        self._headerTimer: Optional[IDelayedCall] = None
        self.peerKey: Optional[str] = None
        self.peer = Peer(self.clock)
        self.budgets = self.peer.budgets
        self.secure = False
        self._wire: Any = None
        #: Its client's tab in the site's ledger (``connections.Tab``).
        self.tab: Tab = uncounted_tab()

    # ---- the connection
    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.secure = ISSLTransport.providedBy(transport)
        # What holds our bytes until the socket takes them: the TCP
        # transport (under TLS, the one beneath it).
        self._wire = getattr(transport, "transport", transport) if self.secure else transport
        self._joinPeers(transport)
        header_bytes = self.settings.max_header_bytes
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = self.h2 = FastH2Connection(config=config, header_cap=2 * header_bytes)
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
        conn.initiate_connection()
        # No SETTINGS_INITIAL_WINDOW_SIZE: a change would apply to streams
        # a client already sent on, and drive their windows negative.
        conn.increment_flow_control_window(CONNECTION_WINDOW)
        transport.registerProducer(self, True)
        channels = self.site.channels
        channels.add(self)
        # The client's ledger (--max-queued-per-client), shared with
        # its HTTP/1.1 connections: the tab handed over, if any.
        self.tab = channels.tabOf(self)
        self._settingsTimer = self.clock.callLater(self.settingsTimeout, self._settingsTimedOut)
        self._idleFor()
        self.flush()

    def _joinPeers(self, transport: Any) -> None:
        """Share the budgets of this client's other connections."""
        site = self.site
        self.peerKey = site.clientAddresses.ofConnection(transport.getPeer())
        self.peer = site.h2Peers.join(self.peerKey)
        self.budgets = self.peer.budgets

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
        # DATA frames as header + payload buffers, unjoined (_h2.py).
        data = self.h2.pending()
        self.unflushed = 0
        if data:
            self.transport.writeSequence(data)  # type: ignore[union-attr]

    # ---- what it holds for its client
    def queue(self, delta: int) -> None:
        """Every change of the bytes its streams queue for the client (body,
        pages, error texts waiting for a window or for the transport) goes
        through here: the one place to count them (per client, too)."""
        self.queued += delta
        self.tab.queued(delta)

    def sendRoom(self) -> int:
        """Bytes the pipe may still write to this connection's streams now."""
        return SEND_BUFFER - self.unflushed - buffered_bytes(self._wire)

    def held(self) -> int:
        """Bytes this connection holds for its client: queued in its
        streams, and handed to the transport but not sent."""
        return self.queued + self.unflushed + buffered_bytes(self._wire)

    def dataReceived(self, data: bytes) -> None:
        if self.discarding or (self.closing and not self.streams):
            return
        self.inEvents = True
        try:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as failure:
                # h2 has queued its GOAWAY. Its text may quote what the
                # client sent (a header, a token): only its kind is logged.
                log.info("HTTP/2 connection ended: {why}", why=describe(failure))
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
            silent, self.h2.silent = self.h2.silent, 0
            if silent and not self._spend("silent", silent):
                return
            self._timeHeaderBlock()
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
            if (
                self.closing
                or len(self.streams) >= self.maxStreams
                or self.held() >= QUEUE_LIMIT
                # Its client holds --max-queued-per-client unread over all
                # its connections: nothing new for it until it reads.
                or self.tab.over
            ):
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
            self._windowUpdated(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if self._spendControl(event):
                self._drainAll()
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self._stopSettingsTimer()
            self._spendControl(event)
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client opens no new stream; those open go on (RFC 9113
            # 6.8): h2's state machine is kept open, and new streams are
            # refused here.
            self.h2.keep_open()
            if not self._spendControl(event):
                return
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
                h2.events.AlternativeServiceAvailable,
            ),
        ):
            self._spend("control")

    def _windowUpdated(self, streamID: int) -> None:
        """A WINDOW_UPDATE: what waited for it goes. One that comes when
        nothing was sent since the last (on its stream, or the connection)
        changes nothing we did, and spends from the silent budget."""
        if streamID:
            stream = self.streams.get(streamID)
            if stream is None or not stream.sentSinceUpdate:
                if not self._spend("silent"):
                    return
            if stream is not None:
                stream.sentSinceUpdate = False
                stream.drain()
            return
        if not self.sentSinceUpdate and not self._spend("silent"):
            return
        self.sentSinceUpdate = False
        self._drainBlocked()

    def _spendControl(self, event: h2.events.Event) -> bool:
        """Spend a control frame, but for the first of each kind every
        connection sends once (ONCE_PER_CONNECTION): those are the price of
        a connection, which the connection caps bound, not a flood; charged,
        a pool of short connections from one address (a worker loop of
        ``curl --http2-prior-knowledge``) ran out of budget by its 50th."""
        kind = type(event)
        if kind in ONCE_PER_CONNECTION and kind not in self._once:
            self._once.add(kind)
            return True
        return self._spend("control")

    def _spend(self, budget: str, count: int = 1) -> bool:
        """Spend from ``budget``; past it the connection is a flood, and ends."""
        if self.budgets[budget].spend(count):
            return True
        if not self._calm:
            self._calm = True
            log.info("HTTP/2 flood ({kind}): connection ended", kind=budget)
            self.rejected(f"h2_flood_{budget}")
            self.goAway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._linger()
        return False

    def _settingsTimedOut(self) -> None:
        """Our SETTINGS were never acknowledged (RFC 9113 6.5.3)."""
        self._settingsTimer = None
        if self.transport is None or self.discarding:
            return
        log.info("HTTP/2 connection ended: our SETTINGS were not acknowledged")
        self.rejected("h2_settings_timeout")
        self.goAway(h2.errors.ErrorCodes.SETTINGS_TIMEOUT)
        self._linger()

    def _timeHeaderBlock(self) -> None:
        """A header block begun must end within --header-timeout, as an
        HTTP/1.1 head must, whether or not other streams are open (the idle
        timer runs only while none is)."""
        if not self.h2.mid_header_block():
            self._stopHeaderTimer()
        elif self._headerTimer is None:
            self._headerTimer = self.clock.callLater(self.headerTimeout, self._headerBlockTimedOut)

    def _headerBlockTimedOut(self) -> None:
        self._headerTimer = None
        if self.transport is None or self.discarding:
            return
        log.info("HTTP/2 connection ended: a header block did not end within the header timeout")
        self.rejected("h2_header_timeout")
        self.goAway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self._linger()

    def _stopHeaderTimer(self) -> None:
        timer, self._headerTimer = self._headerTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _stopSettingsTimer(self) -> None:
        timer, self._settingsTimer = self._settingsTimer, None
        if timer is not None and timer.active():
            timer.cancel()

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

    def _drainBlocked(self) -> None:
        """The connection's window opened: the streams that waited for it
        go on (not every stream: a WINDOW_UPDATE on the connection must not
        cost a walk of them all)."""
        blocked, self.blocked = self.blocked, {}
        for stream in blocked.values():
            stream.drain()

    # ---- senders that wait
    def admitWaiting(self) -> bool:
        """Whether one more sender of this connection may wait for its pipe
        (each may send the default window before its pipe reads it)."""
        return self.waiting < WAITING_PER_CONNECTION and self.peer.waiting < WAITING_PER_CLIENT

    def waitingChanged(self, delta: int) -> None:
        self.waiting += delta
        self.peer.waiting += delta

    def rejected(self, reason: str) -> None:
        """Count a refusal before any project is known (metrics'
        ``pipeserver_rejections_total``, project "")."""
        self.site.rejected(reason)

    def streamClosed(self, stream: H2Stream) -> None:
        if self.streams.get(stream.streamID) is stream:
            del self.streams[stream.streamID]
            self.blocked.pop(stream.streamID, None)
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
        self._stopSettingsTimer()
        self._stopHeaderTimer()
        later, self._abortLater = self._abortLater, None
        if later is not None and later.active():
            later.cancel()
        self.site.channels.discard(self)
        self._endStreams(reason)
        self.site.h2Peers.leave(self.peerKey, self.peer)
        self.transport = None

    def _endStreams(self, reason: Failure) -> None:
        streams, self.streams = self.streams, {}
        self.blocked = {}
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
        # What the streams handed h2 goes out now, not with the next write.
        self.wrote()

    def stopProducing(self) -> None:
        pass


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


def describe(failure: h2.exceptions.ProtocolError) -> str:
    """What went wrong, for the log, without h2's text (which may quote a
    header the client sent: a token in ``Authorization``)."""
    code = getattr(failure, "error_code", None)
    name = getattr(code, "name", None) or str(code)
    return f"{type(failure).__name__} ({name})"


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


def turn(old: PipeChannel, data: bytes) -> Optional[bool]:
    """Turn the connection of ``old`` (a fresh PipeChannel, first bytes
    ``data``) to HTTP/2 if it speaks it: True once handed over, False if it
    does not (or cannot change protocols), None while ``data`` may still be
    the beginning of the preface (``PipeChannel.turn``)."""
    verdict = wants_h2(old.transport, data)
    if verdict is None:
        return None
    return verdict and handover(old, old.transport, data)


def handover(old: PipeChannel, transport: Any, data: bytes) -> bool:
    """Give ``transport`` (whose protocol is ``old``, a fresh PipeChannel)
    to a new :class:`H2Channel`, and feed it ``data``. False if the
    transport cannot change protocols (then HTTP/1.1 goes on)."""
    # The site that handed ``old`` this function is a PipeSite (site.py).
    channel = H2Channel(typing.cast(H2Site, old.site))
    if getattr(transport, "wrappedProtocol", None) is old:  # TLS
        transport.wrappedProtocol = channel
    elif getattr(transport, "protocol", None) is old:  # TCP, Unix
        transport.protocol = channel
    else:
        return False
    old.leave()
    # HTTP/1.1 read heads 16 KiB at a time; a stream's window bounds h2's.
    read_freely(transport)
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return True
