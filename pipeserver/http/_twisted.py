"""Every private name of Twisted that pipeserver uses, in one place.

Stock twisted.web cannot stream a request body (it renders a request once the
body is in, spooled to memory or disk; see /docs/ARCHITECTURE.md), so the
channel leans on Twisted's internals. Each one is named here, once, and
checked when this module is imported: if a Twisted release renames or
reshapes one, the server refuses to start with :class:`TwistedChanged`,
naming the Twisted version and the missing name, rather than run on a
``getattr`` default that would, say, send a chunked response unframed.
``tests/test_twisted_internals.py`` shows, with real bytes, what each one
does for us and what would break.

What is used, and where:

* :class:`StreamingChannel` (the base of ``channel.PipeChannel``):
  ``HTTPChannel``'s request line (``_command``/``_path``/``_version``), its
  body state (``_transferDecoder``, ``_handlingRequest``, LineReceiver's
  ``_buffer``/``_busyReceiving``), its header counts
  (``_receivedHeaderSize``/``_receivedHeaderCount``), its idle-timeout
  stash (``_savedTimeOut``), its abort timer (``_abortingCall``), its two
  private hooks (``_maybeChooseTransferDecoder``,
  ``_respondToBadRequestAndDisconnect``), its read owner
  (``_networkProducer``, see :meth:`StreamingChannel.readGate`), its
  pipelined bytes (``_dataBuffer``, ``_optimisticEagerReadSize``), whether
  the transport paused it (``_waitingForTransport``), and its two timeout
  methods, overridden so that no client address is logged;
* :data:`ChunkedTransferDecoder` and :data:`MalformedChunkedData`
  (``chunked.ViewChunkedDecoder`` subclasses the one and raises the other),
  and the decoder's ``_buffer`` (:func:`chunked_body_ends`);
* a TCP transport's ``_tempDataBuffer``/``_tempDataLen`` (what ``write``
  queued since the last send; fastpath.py sends it itself), its
  ``producerPaused`` (:func:`resume_when_drained`, checked on a stub, off
  if unverified) and its log prefix (``logstr``, ``hostname``:
  :func:`hide_peer_in_log_prefix`);
* ``Request.chunked`` (:func:`response_chunked`) and ``_disconnected``;
* a FileDescriptor's ``_writeDisconnecting`` and write buffers
  (:func:`stop_writing_if_done`: what ``doWrite`` does once all is sent,
  compared with it at import, off if they differ);
* ``twisted.web.resource._IEncodingResource``: :func:`process_leaf` does
  what ``server.Request.process`` does for a leaf root that gives no
  encoder, compared with it at import on requests of its own (off, the
  public path, if they differ);
* what ``http.Request`` calls on its channel (``writeHeaders``, ``write``,
  ``requestDone``: the private ``_IDeprecatedHTTPChannelToRequestInterface``),
  which ``h2stream.H2Stream`` implements for a request on an HTTP/2 stream;
* ``LogPublisher._observers`` (:func:`log_observers`, checked on a
  publisher of its own, off if unverified): whether our text observer is
  the only one, so that an access line may skip the event;
* ``TLSMemoryBIOFactory._applyProtocolNegotiation`` (a version switch:
  :data:`ALPN_SET_PER_CONNECTION`) and ``ReactorBase._exitSignal``
  (:func:`set_exit_signal`).
"""

# twisted.web.http is untyped, and this module is where its internals are
# called from typed code.
# mypy: disallow-untyped-calls=False, warn-unreachable=False

from __future__ import annotations

import copy
import inspect
from typing import cast, Any, Callable, List, Optional, Tuple

import twisted
from twisted.internet import abstract, base, tcp
from twisted.internet.interfaces import IPushProducer
from twisted.protocols import basic
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer
from twisted.web import http, resource, server

VERSION = twisted.__version__


class TwistedChanged(ImportError):
    """This Twisted lacks (or reshaped) an internal pipeserver relies on."""


def _changed(name: str, why: str) -> TwistedChanged:
    return TwistedChanged(
        f"pipeserver cannot run on Twisted {VERSION}: {name} ({why}) is missing or changed. "
        "pipeserver supports the Twisted releases setup.cfg names; see "
        "pipeserver/http/_twisted.py and tests/test_twisted_internals.py."
    )


def _need(owner: Any, name: str, why: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        where = getattr(owner, "__qualname__", type(owner).__qualname__)
        raise _changed(f"{where}.{name}", why) from None


def _needParameters(function: Callable[..., Any], names: List[str], why: str) -> None:
    if list(inspect.signature(function).parameters) != names:
        raise _changed(function.__qualname__ + "(" + ", ".join(names[1:]) + ")", why)


# ---- module-level names
try:
    from twisted.web.http import _ChunkedTransferDecoder as ChunkedTransferDecoder
    from twisted.web.http import _MalformedChunkedDataError as MalformedChunkedData
except ImportError:
    raise _changed(
        "twisted.web.http._ChunkedTransferDecoder or _MalformedChunkedDataError",
        "the chunked decoder, and what it raises",
    ) from None

__all__ = [
    "ALPN_SET_PER_CONNECTION",
    "ChunkedTransferDecoder",
    "DRAIN_NOTICE",
    "MalformedChunkedData",
    "StreamingChannel",
    "TwistedChanged",
    "VERSION",
    "chunked_body_ends",
    "hide_peer_in_log_prefix",
    "LOG_OBSERVERS_KNOWN",
    "log_observers",
    "LEAN_PROCESS",
    "IDLE_WRITER_STOPS",
    "stop_writing_if_done",
    "process_leaf",
    "request_disconnected",
    "response_chunked",
    "resume_when_drained",
    "set_exit_signal",
    "set_temp_data",
    "temp_data",
    "temp_data_len",
]


# ---- the channel
class StreamingChannel(http.HTTPChannel):
    """``HTTPChannel`` with the internals a streaming channel needs given
    names. Twisted's two private hooks are overridden here and passed on to
    public-named methods a subclass may override."""

    # -- the request line, set by lineReceived, deleted at allContentReceived
    def requestLine(self) -> Tuple[bytes, bytes, bytes]:
        """The method, target and version of the request being read."""
        return self._command, self._path, self._version

    # -- hooks Twisted calls by their private names
    def _respondToBadRequestAndDisconnect(self) -> None:
        self.badRequest()

    def badRequest(self) -> None:
        """Answer a malformed request and close (Twisted calls this for
        every parse error it finds, and so do we)."""
        http.HTTPChannel._respondToBadRequestAndDisconnect(self)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        ok = bool(super()._maybeChooseTransferDecoder(header, data))
        decoder = self._transferDecoder
        if ok and type(decoder) is ChunkedTransferDecoder:
            self._transferDecoder = self.chunkedDecoder(decoder)
        return ok

    def chunkedDecoder(self, stock: Any) -> Any:
        """The decoder of a chunked body, given Twisted's (which calls
        ``dataCallback``/``finishCallback``)."""
        return stock

    # -- the body
    def transferDecoder(self) -> Any:
        """The decoder of the request body being read (None: none)."""
        return self._transferDecoder

    def dataReceived(self, data: bytes) -> None:
        decoder = self._transferDecoder
        if (
            decoder is not None
            and not self.line_mode
            and self.timeOut is None
            and not self._busyReceiving
            and not self._buffer
            and not self.paused
            and not self._handlingRequest
        ):
            # A request body (a streamed upload's, on the data path): what
            # HTTPChannel.dataReceived -> LineReceiver.dataReceived ->
            # rawDataReceived do in this state, without their calls. The
            # timeout is off (resetTimeout would do nothing), nothing is
            # buffered, and the body goes to the transfer decoder.
            self._busyReceiving = True
            try:
                try:
                    decoder.dataReceived(data)
                except MalformedChunkedData:
                    self.badRequest()
            finally:
                self._busyReceiving = False
            if self._buffer:
                # Bytes left after the body (setLineMode), or that came in
                # meanwhile: LineReceiver's loop would go on with them.
                basic.LineReceiver.dataReceived(self, b"")
            return
        self.headDataReceived(data)

    def headDataReceived(self, data: bytes) -> None:
        """Bytes the fast path above does not take: Twisted's own chain."""
        http.HTTPChannel.dataReceived(self, data)

    def unfinishedHeadLine(self) -> bytes:
        """What LineReceiver holds of a head line with no CRLF yet, once its
        loop is done (b"" while it runs, for a request being handled, or
        while it is ``paused``: then it holds whole requests not read yet)."""
        if not self.line_mode or self._busyReceiving or self._handlingRequest or self.paused:
            return b""
        return bytes(self._buffer)

    def parseBuffered(self) -> None:
        """Go on with the bytes LineReceiver holds unparsed, its loop having
        stopped at ``paused`` (set by a subclass to start no next request)."""
        if self._buffer and not self._busyReceiving:
            self.dataReceived(b"")

    # -- pipelined requests
    def unparsedBytes(self) -> int:
        """Bytes read from the client and not yet parsed: LineReceiver's
        buffer and the requests held while one is handled."""
        return len(self._buffer) + sum(map(len, self._dataBuffer))

    def pipelinedBytes(self) -> int:
        """Bytes of the requests a client sent after the one being handled
        (held until it is done)."""
        return sum(map(len, self._dataBuffer)) if self._handlingRequest else 0

    def pipelinedMax(self) -> int:
        """How many of those Twisted reads before it pauses the transport
        (``_optimisticEagerReadSize``), unless it waits for the transport."""
        size: int = self._optimisticEagerReadSize
        return size

    def handlingRequest(self) -> bool:
        """Whether a request is being answered (its head and body are in)."""
        return bool(self._handlingRequest)

    def waitingForTransport(self) -> bool:
        """Whether the transport has paused the channel (its write buffer
        is full) and not resumed it yet."""
        return bool(self._waitingForTransport)

    def bufferedBody(self) -> bytes:
        """Body bytes read from the socket but not yet given to the decoder."""
        return b"" if self.line_mode else bytes(self._buffer)

    # -- header limits
    def headersTooLarge(self) -> bool:
        return bool(
            self._receivedHeaderSize > self.totalHeadersSize
            or self._receivedHeaderCount > self.maxHeaders
        )

    def markHeadersTooLarge(self) -> None:
        self._receivedHeaderSize = self.totalHeadersSize + 1

    # -- timers
    def suspendTimeout(self) -> Optional[float]:
        """Turn the idle timeout off for this request; ``requestDone`` puts
        it back (it restores ``_savedTimeOut``). Returns it."""
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)
        saved: Optional[float] = self._savedTimeOut
        return saved

    def forceAbortLater(self, seconds: float) -> None:
        """Abort the connection in ``seconds`` unless it closes first (the
        timer Twisted cancels when it does)."""
        self._abortingCall = self.callLater(seconds, self.forceAbortClient)

    # Twisted's two log "Timing out client: IPv4Address(...)" and "Forcibly
    # timing out client: ...": the same, without a word (no client address
    # is ever logged; an idle keep-alive connection closing is routine).
    def timeoutConnection(self) -> None:
        if self.abortTimeout is not None:
            self.forceAbortLater(self.abortTimeout)
        self.loseConnection()

    def forceAbortClient(self) -> None:
        self._abortingCall = None
        transport: Any = self.transport
        transport.abortConnection()

    # -- reading the transport
    def readGate(self) -> Any:
        """What HTTPChannel pauses and resumes to stop and start reading
        (``_networkProducer``, set at ``connectionMade``)."""
        return self._networkProducer

    def setReadGate(self, gate: Any) -> None:
        self._networkProducer = gate


def chunked_body_ends(decoder: Any, data: bytes) -> bool:
    """Whether ``data`` completes the chunked body ``decoder`` is reading,
    found by a copy of the decoder (its ``_buffer`` copied too), so the real
    one is left as it is."""
    probe = copy.copy(decoder)
    probe._buffer = bytearray(decoder._buffer)
    ended: List[bytes] = []
    probe.dataCallback = lambda piece: None
    probe.batchCallback = None
    probe.finishCallback = ended.append
    try:
        probe.dataReceived(data)
    except Exception:
        return False
    return bool(ended)


# ---- requests
def response_chunked(request: Any) -> bool:
    """Whether Twisted frames ``request``'s response in chunks (known once
    its head is written)."""
    return bool(request.chunked)


def request_disconnected(request: Any) -> bool:
    """Whether ``request``'s connection is gone."""
    return bool(request._disconnected)


def process_leaf(request: Any, date: bytes) -> bool:
    """``server.Request.process`` for a site whose root is a leaf that
    gives no encoder (``PipeResource``), with ``date`` as its Date header:
    no traversal (``getChildForRequest`` returns a leaf root at once), the
    two headers set directly. False, and nothing done, for any other root,
    for ``*``, or where this Twisted's own was not found to match
    (:data:`LEAN_PROCESS`): then ``process`` is Twisted's."""
    return LEAN_PROCESS and _processLeaf(request, date)


def _processLeaf(request: Any, date: bytes) -> bool:
    site = request.channel.site
    root = site.resource
    if not getattr(root, "isLeaf", False) or request.path == b"*" or _encodingResource(root):
        return False
    request.site = site
    headers = request.responseHeaders
    headers.setRawHeaders(b"Server", [server.version])
    headers.setRawHeaders(b"Date", [date])
    request.prepath = []
    request.postpath = list(map(_unquote, request.path[1:].split(b"/")))
    request.sitepath = []
    try:
        request.render(root)
    except BaseException:
        request.processingFailed(Failure())
    return True


_unquote: Callable[[bytes], bytes] = getattr(http, "unquote")  # what process() uses (untyped)


def _encodingResource(root: object) -> bool:
    return bool(resource._IEncodingResource.providedBy(root))


def _leanProcessMatches() -> bool:
    """Whether :func:`process_leaf` leaves a request as Twisted's
    ``server.Request.process`` does (every attribute it sets, the response
    headers in order, the resource rendered): tried on two requests of its
    own, in the same second."""
    rendered: List[object] = []

    class Leaf(resource.Resource):
        isLeaf = True

        def render(self, request: object) -> Any:
            rendered.append(request)
            return server.NOT_DONE_YET

    from twisted.internet.task import Clock

    class Channel:
        transport = None
        factory = None
        site = server.Site(Leaf(), reactor=Clock())

        def getPeer(self) -> None:
            return None

        def getHost(self) -> None:
            return None

    def run(lean: bool) -> Tuple[Any, Any, bool]:
        request = server.Request(cast(Any, Channel()))
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        request.uri = request.path = b"/a%20b/c/"
        before = dict(vars(request))
        if lean:
            if not _processLeaf(request, http.datetimeToString()):
                raise ValueError("not taken")
        else:
            request.process()
        after = vars(request)
        changed = {k: v for k, v in after.items() if k not in before or before[k] is not v}
        return changed, list(request.responseHeaders.getAllRawHeaders()), rendered[-1:] == [request]

    try:
        if not _need(resource, "_IEncodingResource", "what process() asks a resource"):
            return False
        for _ in range(3):
            stock, lean = run(False), run(True)
            if stock == lean:
                return True
        return False
    except Exception:
        return False


#: :func:`process_leaf` does what this Twisted's ``Request.process`` does.
LEAN_PROCESS = _leanProcessMatches()


# ---- transports
def temp_data_len(transport: object) -> int:
    """Bytes a TCP transport's ``write`` queued since its last send (0 for
    a transport that is no ``FileDescriptor``: TLS, tests' fakes)."""
    value = getattr(transport, "_tempDataLen", 0)
    return value if isinstance(value, int) else 0


def temp_data(transport: Any) -> List[bytes]:
    """What a TCP transport's ``write`` queued since its last send."""
    pending: List[bytes] = transport._tempDataBuffer
    return pending


def set_temp_data(transport: Any, rest: bytes) -> None:
    """Leave only ``rest`` queued (the rest went to the socket already)."""
    transport._tempDataBuffer = [rest] if rest else []
    transport._tempDataLen = len(rest)


def _drainNoticeWorks() -> bool:
    """Whether a FileDescriptor transport calls its streaming producer's
    ``resumeProducing`` once its write buffer has drained whenever
    ``producerPaused`` is set, as it does after pausing the producer
    itself (``abstract.FileDescriptor.doWrite``): tried on one, with a
    reactor that records nothing."""

    class Reactor:
        def addWriter(self, descriptor: object) -> None:
            pass

        def removeWriter(self, descriptor: object) -> None:
            pass

    class Descriptor(abstract.FileDescriptor):
        def writeSomeData(self, data: bytes) -> int:
            return len(data)

    @implementer(IPushProducer)
    class Producer:
        resumed = 0

        def pauseProducing(self) -> None:
            pass

        def resumeProducing(self) -> None:
            self.resumed += 1

        def stopProducing(self) -> None:
            pass

    try:
        descriptor = Descriptor(reactor=Reactor())  # type: ignore[arg-type]  # a stub
        descriptor.connected = True
        producer = Producer()
        descriptor.registerProducer(producer, True)
        descriptor.write(b"x")
        if descriptor.producerPaused:
            return False
        descriptor.producerPaused = True
        descriptor.doWrite()
        return producer.resumed == 1 and not descriptor.producerPaused
    except Exception:
        return False


#: ``resume_when_drained`` can be had (else it does nothing: the public path).
DRAIN_NOTICE = _drainNoticeWorks()


def resume_when_drained(transport: object) -> bool:
    """Have a TCP (or Unix) transport that holds unsent bytes call its
    producer's ``resumeProducing`` once it has sent them all, as it does
    after it paused the producer (its ``producerPaused``). False where that
    cannot be had (TLS, a test's fake, a Twisted where it was not checked):
    then only the transport's own pause (past its ``bufferSize``) says so."""
    if not DRAIN_NOTICE or not isinstance(transport, abstract.FileDescriptor):
        return False
    if transport.producer is None or not transport.streamingProducer:
        return False
    transport.producerPaused = True
    return True


def _idleWriterCheck() -> bool:
    """Whether :func:`stop_writing_if_done` leaves a FileDescriptor as its
    ``doWrite`` does once it has nothing left to send (with a streaming
    producer, and without): tried on two, with reactors that record what
    they are asked."""

    class Reactor:
        def __init__(self) -> None:
            self.calls: List[str] = []

        def addWriter(self, descriptor: object) -> None:
            self.calls.append("addWriter")

        def removeWriter(self, descriptor: object) -> None:
            self.calls.append("removeWriter")

    class Descriptor(abstract.FileDescriptor):
        def writeSomeData(self, data: bytes) -> int:
            return len(data)

    @implementer(IPushProducer)
    class Producer:
        def pauseProducing(self) -> None:
            pass

        def resumeProducing(self) -> None:
            raise AssertionError("resumed")

        def stopProducing(self) -> None:
            pass

    def state(lean: bool, producer: bool) -> Tuple[Any, ...]:
        reactor = Reactor()
        descriptor = Descriptor(reactor=reactor)  # type: ignore[arg-type]  # a stub
        descriptor.connected = True
        if producer:
            descriptor.registerProducer(Producer(), True)
        descriptor.write(b"x")
        set_temp_data(descriptor, b"")  # as if sent
        if lean:
            if not _stopWritingIfDone(descriptor):
                raise ValueError("not taken")
        else:
            descriptor.doWrite()
        return (
            reactor.calls,
            descriptor.dataBuffer,
            descriptor.offset,
            descriptor._tempDataBuffer,
            descriptor._tempDataLen,
            descriptor.producerPaused,
            descriptor.disconnecting,
            descriptor._writeDisconnected,
        )

    try:
        _need(abstract.FileDescriptor, "_writeDisconnecting", "a half-close waiting for the buffer")
        return all(state(False, p) == state(True, p) for p in (False, True))
    except Exception:
        return False


def _stopWritingIfDone(transport: Any) -> bool:
    if (
        transport._tempDataLen
        or transport.offset < len(transport.dataBuffer)
        or transport.disconnecting
        or transport._writeDisconnecting
        or (
            transport.producer is not None
            and (not transport.streamingProducer or transport.producerPaused)
        )
    ):
        return False
    transport.dataBuffer = b""
    transport.offset = 0
    transport.stopWriting()
    return True


#: ``stop_writing_if_done`` can be had (else it does nothing: the public path).
IDLE_WRITER_STOPS = _idleWriterCheck()


def stop_writing_if_done(transport: Any) -> bool:
    """Do now what a FileDescriptor's ``doWrite`` would do on the reactor's
    next turn once ``transport`` holds nothing to send, when that is only to
    stop asking to write (no producer to resume, no close or half-close
    waiting): so the reactor does not wake it to send nothing (an empty
    ``send``). False, and nothing done, otherwise, or where this Twisted
    was not checked (:data:`IDLE_WRITER_STOPS`)."""
    return IDLE_WRITER_STOPS and _stopWritingIfDone(transport)


def hide_peer_in_log_prefix(transport: object) -> None:
    """Drop the client's address from a TCP (or Unix) server transport's
    log prefix (``logstr``, "Protocol,session,host"), which Twisted puts on
    every event logged while it handles the connection (an unhandled error's
    traceback, for one). Under TLS, the TCP transport below is the one."""
    below = getattr(transport, "transport", None) if isinstance(transport, ProtocolWrapper) else transport
    if not isinstance(below, tcp.Server):
        return
    suffix = f",{below.hostname}"
    if below.logstr.endswith(suffix):
        below.logstr = below.logstr[: -len(suffix)]


# ---- logging
def _logObserversKnown() -> bool:
    """Whether a LogPublisher keeps the observers it passes events to in
    its ``_observers`` list, in order, added and removed in place: tried on
    a publisher of its own."""
    from twisted.logger import ILogObserver, LogPublisher

    @implementer(ILogObserver)
    class Observer:
        def __call__(self, event: object) -> None:
            pass

    one, two = Observer(), Observer()
    try:
        publisher = LogPublisher(one)
        listed = publisher._observers
        if type(listed) is not list or listed != [one]:
            return False
        publisher.addObserver(two)
        publisher.removeObserver(one)
        return publisher._observers is listed and listed == [two]
    except Exception:
        return False


#: ``log_observers`` can be had (else it says None: the public path).
LOG_OBSERVERS_KNOWN = _logObserversKnown()


def log_observers(publisher: object) -> Optional[List[Any]]:
    """The observers a ``LogPublisher`` passes each event to (not to be
    changed), or None where that cannot be known: another kind of observer,
    or a Twisted where it was not checked."""
    from twisted.logger import LogPublisher

    if not LOG_OBSERVERS_KNOWN or not isinstance(publisher, LogPublisher):
        return None
    listed: List[Any] = publisher._observers
    return listed


# ---- TLS and the reactor
def _alpnSetPerConnection() -> bool:
    """Whether this Twisted sets a site's ALPN callback on the endpoint's one
    shared SSL context at every connection it accepts, as 25.5 does
    (``TLSMemoryBIOFactory._applyProtocolNegotiation``). pyOpenSSL 26.2+
    refuses to change a context that has made a connection, so there every
    TLS connection after the first was dropped. Twisted 26 sets it up once
    per context instead, and there a site that offers no protocol fails
    every client that asks for one ("tlsv1 alert internal error")."""
    try:
        from twisted.protocols import tls
    except ImportError:  # no pyOpenSSL: no TLS at all
        return False
    return hasattr(tls.TLSMemoryBIOFactory, "_applyProtocolNegotiation")


ALPN_SET_PER_CONNECTION = _alpnSetPerConnection()


def set_exit_signal(reactor: object, signum: int) -> None:
    """Have twistd exit as if killed by ``signum`` once the reactor stops
    (what ``ReactorBase._exitSignal`` holds); no-op for other reactors."""
    if isinstance(reactor, base.ReactorBase):
        reactor._exitSignal = signum


# ---- the checks, at import
def _probeChannel() -> None:
    """Read a request head with a stock HTTPChannel and look at what it set."""
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure
    from twisted.internet.error import ConnectionDone

    channel = http.HTTPChannel()
    channel.timeOut = None  # no timer on the reactor
    transport = StringTransport()
    channel.makeConnection(transport)
    for name in ("_handlingRequest", "_transferDecoder", "_networkProducer", "_dataBuffer"):
        if name not in vars(channel):
            raise _changed(f"HTTPChannel.{name}", "the channel's state")
    if channel._networkProducer is not transport:
        raise _changed("HTTPChannel._networkProducer", "what the channel pauses to stop reading")
    channel.dataReceived(b"PUT /p?q HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: x\r\n")
    line = tuple(getattr(channel, name, None) for name in ("_command", "_path", "_version"))
    if line != (b"PUT", b"/p?q", b"HTTP/1.1"):
        raise _changed("HTTPChannel._command/_path/_version", "the request line")
    if type(channel._transferDecoder) is not ChunkedTransferDecoder:
        raise _changed("HTTPChannel._transferDecoder", "the decoder of the body being read")
    if not (channel._receivedHeaderCount and channel._receivedHeaderSize):
        raise _changed("HTTPChannel._receivedHeaderCount/Size", "the head's size so far")
    channel.connectionLost(Failure(ConnectionDone()))


def _probeRequestChannel() -> None:
    """Answer a request on a channel that records what the request calls:
    an HTTP/2 stream stands in for the channel in just this way."""
    calls: List[Tuple[str, Any]] = []

    class Recorder:
        transport = None
        factory = None

        def getPeer(self) -> None:
            return None

        def getHost(self) -> None:
            return None

        def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
            calls.append(("writeHeaders", (version, code)))

        def write(self, data: bytes) -> None:
            calls.append(("write", data))

        def writeSequence(self, data: List[bytes]) -> None:
            calls.append(("writeSequence", data))

        def requestDone(self, request: object) -> None:
            calls.append(("requestDone", None))

    request = http.Request(cast(Any, Recorder()))
    request.method, request.clientproto = b"GET", b"HTTP/2"
    request.write(b"x")
    request.finish()
    if calls != [
        ("writeHeaders", (b"HTTP/2", b"200")),
        ("write", b"x"),
        ("requestDone", None),
    ]:
        raise _changed("Request's channel calls", f"what h2stream.H2Stream implements: {calls}")


def _check() -> None:
    channel = http.HTTPChannel
    for name, why in [
        ("_maybeChooseTransferDecoder", "overridden to decode chunked bodies without copies"),
        ("_respondToBadRequestAndDisconnect", "overridden to answer malformed requests"),
        ("_savedTimeOut", "the idle timeout requestDone restores"),
        ("_receivedHeaderSize", "the size of the head so far"),
        ("_receivedHeaderCount", "the number of headers so far"),
        ("_abortingCall", "the timer that aborts a closing connection"),
        ("timeoutConnection", "overridden so that no client address is logged"),
        ("forceAbortClient", "overridden so that no client address is logged"),
    ]:
        _need(channel, name, why)
    _needParameters(
        channel._maybeChooseTransferDecoder,
        ["self", "header", "data"],
        "overridden to decode chunked bodies without copies",
    )
    _needParameters(
        channel._respondToBadRequestAndDisconnect, ["self"], "overridden to answer malformed requests"
    )
    for name in ("_buffer", "_busyReceiving", "paused"):
        _need(basic.LineReceiver, name, "LineReceiver's state, read on the body fast path")
    _need(channel, "_optimisticEagerReadSize", "pipelined bytes read while a request is handled")
    _need(channel, "_waitingForTransport", "whether the transport paused the channel")
    _probeChannel()
    got: List[bytes] = []
    decoder = ChunkedTransferDecoder(got.append, got.append)
    for name in ("dataCallback", "finishCallback", "state", "_buffer"):
        _need(decoder, name, "the chunked decoder's state")
    decoder.dataReceived(b"5\r\nab")
    if (
        not isinstance(decoder._buffer, bytearray)
        or (decoder.state, getattr(decoder, "length", None), got) != ("BODY", 3, [b"ab"])
    ):
        raise _changed("_ChunkedTransferDecoder.state/length/_buffer", "the decoder's state")
    request = http.Request
    _need(request, "chunked", "how the response is framed")
    _need(request, "_disconnected", "whether the connection is gone")
    descriptor = abstract.FileDescriptor(reactor=object())  # type: ignore[arg-type]  # never used
    for name in ("_tempDataBuffer", "_tempDataLen"):
        _need(descriptor, name, "what a transport's write queued since its last send")
    _need(base.ReactorBase, "_exitSignal", "the signal twistd exits with")
    _probeRequestChannel()


_check()
