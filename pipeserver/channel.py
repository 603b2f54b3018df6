"""HTTP plumbing: stream request bodies instead of spooling them.

Stock twisted.web renders a request only once its whole body is in, spooled
to memory or to a temporary file. A pipe must render at header time and pass
each body chunk on as it arrives, so this module subclasses the channel and
the request. It leans on names Twisted documents as "not intended for
users" (``gotLength``, ``handleContentChunk``, ``requestReceived``); every
private name it needs is reached through _twisted.py (``StreamingChannel``,
its base), which checks them at import. How the modules fit: see
docs/ARCHITECTURE.md.
"""

# twisted.web's channel and request are untyped, and this module subclasses
# and calls them from typed code.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import io
import socket
import time
from typing import Any, List, Optional, Protocol, Sequence

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocolFactory,
)
from twisted.logger import Logger
from twisted.internet import protocol
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from zope.interface import classImplementsOnly, implementer

from pipeserver import _twisted, errors
from pipeserver.chunked import ViewChunkedDecoder
from pipeserver.connections import Connections, Tab, uncounted_tab
from pipeserver.fastpath import PEEK_MAX, buffered_bytes, kernel_unread, peek
from pipeserver.gate import BACKLOG, CHANNEL, ReadGate
from pipeserver.errors import Rejection
from pipeserver.headers import HardenedRequest
from pipeserver.interfaces import Outcome
from pipeserver.logs import access_line

STREAMED_METHODS = (b"PUT", b"POST")

#: Why a PipeChannel starts no next request (``PipeChannel._stalls``): its
#: own responses are not taken; its client's are not (over its budget).
_OWN = 1
_CLIENT = 2

log = Logger()


class BodySink(Protocol):
    """Where a streamed request's body goes (``parties.Upload`` is one)."""

    def bodyChunk(self, data: bytes) -> None: ...

    def bodyEnded(self) -> None: ...

    def connectionLost(self, reason: Failure) -> None: ...


class PipeRequest(HardenedRequest):
    """A request whose body is handed on as it arrives, never stored.

    Every response head says no version and lets nothing a client sent run
    on our origin (``HardenedRequest``, headers.py).
    PUT and POST are rendered as soon as their headers are complete
    (``dispatchEarly``); their resource attaches a ``bodySink``. A response
    may be written while the body still arrives, but ``finish`` is held back
    until the body has ended, since finishing earlier breaks the channel.
    """

    bodySink: Optional[BodySink] = None
    streamed = False
    project = ""
    #: What its path was for it (SPEC §12): plain, queue or live.
    mode = "plain"
    bodyBytes = 0
    #: The body's Content-Length; None when chunked (or not yet known).
    bodyLength: Optional[int] = None
    _bodyEnded = False
    _finishPending = False
    _logged = False
    #: Its connection went before its response ended.
    cutShort = False
    #: Why its pipe ended it early, if it did (the access line's result).
    endedBy: Optional[Outcome] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Twisted sets self.channel to None when the connection goes, which
        # is just when a request cut short still has its access line to log.
        self._accessSite: Any = getattr(self.channel, "site", None)
        clock = getattr(self._accessSite, "reactor", None)
        self.startedAt = clock.seconds() if clock is not None else time.time()

    @property
    def bodyComplete(self) -> bool:
        """True once the whole request body has been read."""
        return not self.streamed or self._bodyEnded

    def gotLength(self, length: Optional[int]) -> None:
        # Never spool: a body goes to the sink or nowhere.
        self.content = io.BytesIO()
        self.bodyLength = length

    def handleContentChunk(self, data: bytes) -> None:
        self.bodyBytes += len(data)
        sink = self.bodySink
        if sink is not None:
            sink.bodyChunk(data)

    def handleContentChunks(self, pieces: List[Any]) -> None:
        """Several body pieces of one read (see chunked.py)."""
        for piece in pieces:
            self.bodyBytes += len(piece)
        sink = self.bodySink
        if sink is None:
            return
        many = getattr(sink, "bodyChunks", None)
        if many is not None:
            many(pieces)
        else:
            for piece in pieces:
                sink.bodyChunk(piece)

    def setRequestLine(self, command: bytes, path: bytes, version: bytes) -> None:
        """What ``requestReceived`` sets from the request line, set now."""
        self.method, self.uri, self.clientproto = command, path, version
        self.args = {}
        self.path, _, query = path.partition(b"?")
        if query:
            self.args = http.parse_qs(query, 1)

    def dispatchEarly(self, command: bytes, path: bytes, version: bytes) -> None:
        """Render now, at header time, as ``requestReceived`` would later."""
        self.streamed = True
        self.setRequestLine(command, path, version)
        self.process()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.streamed:
            super().requestReceived(command, path, version)
            return
        self._bodyEnded = True
        if self.bodySink is not None:
            self.bodySink.bodyEnded()
        if self._finishPending:
            self._finishPending = False
            super().finish()

    def finish(self) -> None:
        if self.streamed and not self._bodyEnded:
            self._finishPending = True
            return
        super().finish()

    def processingFailed(self, reason: Failure) -> None:
        # Twisted's answer is an HTML page ("Processing Failed", or the
        # traceback with displayTracebacks); clients get the [ERROR] line
        # every other failure has, and the traceback goes to the log once.
        log.failure(
            "Unexpected error handling {method} {path}",
            failure=reason,
            method=getattr(self, "method", b"-"),
            path=getattr(self, "path", b"-"),
        )
        sink, self.bodySink = self.bodySink, None
        if sink is not None:
            # The pipe forgets this party as if it had gone.
            sink.connectionLost(reason)
        if self.finished or _twisted.request_disconnected(self):
            return
        if self.startedWriting:
            # Too late for a status: a cut response is a failed one.
            transport: Any = self.transport
            transport.abortConnection()
            return
        rejection = errors.internal_error()
        date = self.responseHeaders.getRawHeaders(b"date")
        # Whatever the resource had set belongs to the answer it did not give.
        self.responseHeaders = Headers({b"date": date} if date else {})
        self.write(rejection.apply(self))
        self.finish()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if not self.finished and not self._logged:
            # finish() logs the others; a request cut short is logged here.
            site = self._accessSite
            # Only a request that got as far as the resource (its method
            # set on the instance): a head cut mid-way is no request yet.
            if site is not None and "method" in vars(self):
                self._logged = True
                self.cutShort = True
                site.log(self)
        sink, self.bodySink = self.bodySink, None
        if sink is not None:
            sink.connectionLost(reason)


#: The bytes a request target may hold: visible ASCII (RFC 9112 3.2, RFC
#: 3986); anything else arrives percent-encoded or not at all.
_TARGET_BYTES = bytes(range(0x21, 0x7F))


def target_ok(path: bytes) -> bool:
    """Whether a request target is all visible ASCII."""
    return not path.translate(None, _TARGET_BYTES)


def _unsafeFieldValue(line: bytes) -> bool:
    """A header line with a CR or NUL in it (RFC 9110 5.5: reject). A bare
    CR could end the header early for a proxy in front of us, and be passed
    on to a receiver as a header line of its own."""
    return b"\r" in line or b"\x00" in line


def expects_only_continue(values: Sequence[bytes]) -> bool:
    """Whether ``Expect`` asks for nothing but ``100-continue``."""
    tokens = {t.strip().lower() for v in values for t in v.split(b",")} - {b""}
    return tokens <= {b"100-continue"}


@implementer(IHalfCloseableProtocol)
class PipeChannel(_twisted.StreamingChannel):
    """An HTTP/1.1 channel that dispatches PUT and POST at header time.

    It also bounds the time a client may take to send its request line and
    headers (``headerTimeout``), apart from the idle timeout, which is off
    while a request waits or streams.

    A client that shuts its sending side (FIN) after a whole upload, as
    ``nc -N`` does, still gets its response: that is a half-close, not a
    hang-up (IHalfCloseableProtocol). A killed client sends the same FIN, so
    a waiting sender is probed (``parties.Upload.halfClosed``) to tell the two
    apart. Any other FIN ends the connection, as it did before: a party
    without a complete upload in flight that sends one has left.

    It answers pipelined requests only as fast as its client takes the
    answers: once a response has ended, if the server still holds some of
    its bytes (the client does not read), no next request is parsed and the
    connection is not read (:data:`gate.BACKLOG`) until they are gone; the
    bytes are written on its client's tab meanwhile (connections.py), and
    while its client is over its budget no new request starts either. What
    arrives after the request being handled is read up to Twisted's 16 KiB,
    and no more, even while the transport is full.
    """

    #: A TCP or TLS transport (a test's fake in unit tests).
    transport: Any
    #: The PipeSite that built it (Site.buildProtocol sets it).
    site: Any
    #: Its line in its client's account (``PipeSite.buildProtocol``; one that
    #: counts nothing for a channel built otherwise).
    tab: Optional[Tab] = None
    #: Why no next request starts: its own responses, or its client's, are
    #: not taken (``_OWN``, ``_CLIENT`` bits).
    _stalls = 0
    #: Bytes of its finished responses it has written on its tab.
    _heldCounted = 0
    _readClosed = False

    def _uploadWhole(self) -> bool:
        """Whether the request in flight is a send whose body has all been read."""
        request = self.requests[-1] if self.requests else None
        return (
            request is not None
            and getattr(request, "bodySink", None) is not None
            and bool(getattr(request, "bodyComplete", False))
            and not request.finished
        )

    def readConnectionLost(self) -> None:
        if self._readClosed:
            return  # again, once a paused transport reads on: nothing new
        self._readClosed = True
        if self._uploadWhole():
            # Its response is still due; after it, nothing more can come.
            self.persistent = False
            self.senderHalfClosed()
        elif not self.requests:
            # Between requests: whatever response is written still goes out.
            self.transport.loseConnection()
        else:
            # A receiver, or an upload cut short: the party has left.
            self.transport.abortConnection()

    def writeConnectionLost(self) -> None:
        pass

    def senderHalfClosed(self) -> None:
        """Tell the upload in flight that its client sent a FIN after its
        whole body (``parties.Upload.halfClosed``)."""
        request = self.requests[-1] if self.requests else None
        note = getattr(getattr(request, "bodySink", None), "halfClosed", None)
        if note is not None:
            note()

    def bodyInKernel(self, sock: socket.socket) -> bool:
        """Whether the rest of the upload in flight is in ``sock``'s kernel
        buffer, unread (the sender is paused), so the sender's FIN is a
        half-close after a whole body rather than a hang-up."""
        request = self.requests[-1] if self.requests else None
        if request is None or getattr(request, "bodySink", None) is None:
            return False
        if self._uploadWhole():
            return True
        queued = kernel_unread(sock)
        if queued is None:
            return False
        held = self.bufferedBody()
        length: Optional[int] = getattr(request, "bodyLength", None)
        if length is not None:
            bodyBytes: int = request.bodyBytes
            return len(held) + queued >= length - bodyBytes
        decoder = self.transferDecoder()
        if decoder is None or not isinstance(decoder, _twisted.ChunkedTransferDecoder):
            return False
        if queued > PEEK_MAX:
            return False
        data = peek(sock, queued)
        if data is None:
            return False
        return _twisted.chunked_body_ends(decoder, held + data)

    headerTimeout: Optional[float] = 20.0
    _headerTimer: Optional[IDelayedCall] = None

    def headDataReceived(self, data: bytes) -> None:
        # What is not a streamed body (StreamingChannel.dataReceived takes
        # those): request heads, and bodies of other requests.
        if self._headerTimer is None and self.line_mode and self.headerTimeout and not self._stalls:
            self._headerTimer = self.callLater(self.headerTimeout, self._headersTooSlow)
        if self._sniffed is not None:
            # The connection's first bytes: HTTP/2 (ALPN, or its preface) is
            # handed to http2.H2Channel, anything else read here.
            data = self._sniffed + data
            if self._turnsToHTTP2(data):
                return
        if not self.requests and not self._stalls and self.tab is not None and self.tab.over:
            # A new request, from a client that leaves too much untaken:
            # it waits (unparsed, unread) until its client is back under.
            self._stall(_CLIENT)
        super().headDataReceived(data)
        if b"\n" in self.unfinishedHeadLine() and not self.transport.disconnecting:
            # Once LineReceiver's loop is done (this call may come from inside
            # it, via setLineMode), the buffer holds one unfinished line of a
            # request head: an LF in it is a bare one (lines end only at
            # CRLF), as typed into nc. Say so now, not at the header timeout.
            self.badRequest()

    #: The first bytes so far, while they may still be HTTP/2's preface.
    _sniffed: Optional[bytes] = b""

    def _turnsToHTTP2(self, data: bytes) -> bool:
        """Whether the connection (first bytes ``data``) went to HTTP/2, or
        waits for more bytes to tell."""
        if not getattr(self.site, "h2Enabled", False):
            self._sniffed = None
            return False
        from pipeserver import http2  # (it builds on this module)

        verdict = http2.wants_h2(self.transport, data)
        if verdict is None:
            self._sniffed = data
            return True
        self._sniffed = None
        return verdict and http2.handover(self, self.transport, data)

    def leave(self) -> None:
        """Give up the connection to another protocol (http2.handover):
        its timers, its place as the transport's producer and in the site
        (its tab goes with the connection, to the protocol that takes it)."""
        self._cancelHeaderTimer()
        self.setTimeout(None)
        self.transport.unregisterProducer()
        channels = getattr(self.factory, "channels", None)
        if channels is not None:
            channels.handOver(self)

    # -- a client that does not take its responses
    def rawDataReceived(self, data: bytes) -> None:
        super().rawDataReceived(data)
        if self.handlingRequest() and self.pipelinedBytes() > self.pipelinedMax():
            # Twisted pauses here only if the transport has not paused it
            # already, and resumes reading when the transport drains: a
            # client that neither reads nor stops sending was read forever.
            self.gate.hold(CHANNEL)

    def requestDone(self, request: Any) -> None:
        # Before Twisted parses the next pipelined request (requestDone does,
        # at once): it waits while this one's bytes are not all taken, or
        # while its client's are not.
        full = self.waitingForTransport()
        held = self._responsesHeld()
        if held != self._heldCounted:
            assert self.tab is not None
            self.tab.queued(held - self._heldCounted)
            self._heldCounted = held
        if self.persistent:
            if held or full:
                # resumeProducing ends it, once they are gone.
                self._stall(_OWN)
            assert self.tab is not None
            if self.tab.over:
                self._stall(_CLIENT)
        super().requestDone(request)

    def _responsesHeld(self) -> int:
        """Bytes of the responses written so far that the server still
        holds, if it will be told when they are gone (``resumeProducing``);
        else 0."""
        transport = self.transport
        if self.waitingForTransport():
            if isinstance(transport, ProtocolWrapper):
                # TLS: the bytes wait in the TCP transport below it.
                return buffered_bytes(transport.transport)
            return buffered_bytes(transport)
        held = buffered_bytes(transport)
        if held and _twisted.resume_when_drained(transport):
            return held
        return 0

    def resumeProducing(self) -> None:
        # The transport has sent all it held (the TLS one below, under TLS).
        super().resumeProducing()
        if self._heldCounted:
            assert self.tab is not None
            self.tab.queued(-self._heldCounted)
            self._heldCounted = 0
        if self._stalls & _OWN:
            self._unstall(_OWN)

    def _stall(self, why: int) -> None:
        """Parse no next request and read nothing until ``why`` is over."""
        if not self._stalls:
            self.paused = True  # LineReceiver's loop stops; its buffer waits
            self.gate.hold(BACKLOG)
            self._cancelHeaderTimer()
        self._stalls |= why
        if why == _CLIENT:
            assert self.tab is not None
            self.tab.whenUnder(self._clientUnder)

    def _clientUnder(self) -> None:
        self._unstall(_CLIENT)

    def _unstall(self, why: int) -> None:
        if not self._stalls & why:
            return
        self._stalls &= ~why
        if self._stalls or self.transport is None or self.transport.disconnecting:
            return
        self.paused = False
        self.gate.release(BACKLOG)
        if not self.handlingRequest():
            # What it sent meanwhile, read before the stall: the next requests.
            self.parseBuffered()

    def _cancelHeaderTimer(self) -> None:
        timer, self._headerTimer = self._headerTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _headersTooSlow(self) -> None:
        self._headerTimer = None
        if self.line_mode:
            rejection = errors.header_timeout()
        elif self.requests and self.requests[-1].startedWriting:
            # A refused upload whose body goes nowhere, already answered.
            self.loseConnection()
            self.forceAbortLater(self.abortTimeout or 15)
            return
        else:
            # The body of a request that has none for us (a GET's), or of
            # one not yet answered: it does not trickle in for ever.
            rejection = errors.body_timeout()
        self.transport.write(rejection.wire())
        self._rejected(rejection.reason)
        self.loseConnection()
        self.forceAbortLater(self.abortTimeout or 15)

    def badRequest(self) -> None:
        self._cancelHeaderTimer()
        if self.requests and getattr(self.requests[-1], "startedWriting", False):
            # A response is under way (a body broke mid-upload): no second
            # status line, just end the connection.
            self.loseConnection()
            return
        rejection = errors.headers_too_large() if self.headersTooLarge() else errors.malformed()
        self.transport.write(rejection.wire())
        self._rejected(rejection.reason)
        self.loseConnection()

    def _rejected(self, reason: str) -> None:
        """Count a request refused before it reached the resource (no
        project is known yet)."""
        registry = getattr(self.site, "registry", None)
        if registry is not None:
            registry.observer.rejected("", reason)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.markHeadersTooLarge()
        self.badRequest()

    def chunkedDecoder(self, stock: Any) -> ViewChunkedDecoder:
        # A chunked body is decoded without copying its bytes (chunked.py).
        fast = ViewChunkedDecoder(stock.dataCallback, stock.finishCallback)
        fast.batchCallback = getattr(self.requests[-1], "handleContentChunks", None)
        return fast

    def lineReceived(self, line: bytes) -> None:
        if b"\n" in line:
            # A bare LF before the CRLF that ended this line of the head.
            self.badRequest()
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        # Twisted 26 refuses these itself, 25.5 only a NUL: our own check
        # holds the line on every supported version.
        if _unsafeFieldValue(line):
            self.badRequest()
            return False
        # Twisted skips "Transfer-Encoding: identity", so "chunked" plus
        # "identity", or "identity" plus Content-Length, would be framed one
        # way here and maybe another by a proxy in front (request smuggling).
        # The only coding accepted is exactly "chunked" (RFC 9112 6.3).
        name, sep, value = line.partition(b":")
        if sep and name.lower() == b"transfer-encoding":
            if value.strip(b" \t").lower() != b"chunked":
                self.badRequest()
                return False
        return bool(super().headerReceived(line))

    def connectionMade(self) -> None:
        super().connectionMade()
        # The one owner of whether this connection reads (gate.py): what
        # HTTPChannel pauses and resumes from now on, and what the pipe holds.
        self.gate = ReadGate(self.readGate())
        self.setReadGate(self.gate)
        if self.tab is None:
            self.tab = uncounted_tab()
        channels = getattr(self.factory, "channels", None)
        if channels is not None:
            channels.opened(self, self.tab)
        # No client address in the log, not even in what Twisted logs for
        # this connection (its HTTP/2 successor's too: the same transport).
        _twisted.hide_peer_in_log_prefix(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelHeaderTimer()
        channels = getattr(self.factory, "channels", None)
        if channels is not None:
            channels.discard(self)
        super().connectionLost(reason)

    _headRefused = False

    def _refuseHead(self, request: PipeRequest) -> bool:
        """Answer now, with the body unread, a request its head alone
        disqualifies; then close, as the unread body cannot be told apart
        from a next request. True if it was refused."""
        command, path, version = self.requestLine()
        if not target_ok(path):
            # Twisted lets through 0x7F-0xB0 (and, before 26, more).
            self.badRequest()
            return True
        headers = request.requestHeaders
        hosts = headers.getRawHeaders(b"host", [])
        if len(hosts) > 1 or (not hosts and version == b"HTTP/1.1"):
            # RFC 9112 3.2: exactly one Host in HTTP/1.1, never two.
            self.badRequest()
            return True
        rejection: Optional[Rejection] = None
        expect = headers.getRawHeaders(b"expect", [])
        if not expects_only_continue(expect):
            rejection = errors.expectation_failed()
            self._rejected(rejection.reason)
        elif expect and version == b"HTTP/1.1" and self.length != 0:
            # The client waits for our word before it sends the body: a
            # sender about to be refused must get that refusal, not a
            # "100 Continue" inviting an upload that goes nowhere.
            check = getattr(self.site.resource, "checkBeforeBody", None)
            if check is not None and command in STREAMED_METHODS:
                request.setRequestLine(command, path, version)
                rejection = check(request)
        if rejection is None:
            return False
        self._cancelHeaderTimer()
        self.transport.write(rejection.wire())
        if "method" not in vars(request):
            request.setRequestLine(command, path, version)
        request.code = rejection.status
        request.sentLength = len(rejection.body)
        request._logged = True
        self.site.log(request)
        self.loseConnection()
        return True

    def allContentReceived(self) -> None:
        # The body is in: the header timer, if a body kept it running, stops.
        self._cancelHeaderTimer()
        # lineReceived calls this right after allHeadersReceived for a
        # request without a body: a refused one must not be rendered.
        if not self._headRefused:
            super().allContentReceived()

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        if self._refuseHead(request):
            self._headRefused = True
            return
        # super() answers "Expect: 100-continue" first, so any response
        # written while dispatching comes after it on the wire.
        super().allHeadersReceived()
        command, path, version = self.requestLine()
        if self.length != 0 and command in STREAMED_METHODS:
            # The idle timeout must not cut an upload that waits or is paused;
            # requestDone() puts it back for the next request.
            saved = self.suspendTimeout()
            request.dispatchEarly(command, path, version)
            if request.bodySink is None and saved:
                # Rejected: it neither waits nor streams, so an upload that
                # stalls is cut like any idle connection.
                self.setTimeout(saved)
        if self.length == 0 or request.bodySink is not None:
            self._cancelHeaderTimer()
        # Otherwise its body goes nowhere (a GET's, a refused upload's): the
        # header timer runs on until it has all come (allContentReceived),
        # as the idle timer, reset by every byte, would not end a trickle.


class RefusedConnection(protocol.Protocol):
    """A connection past its client's cap (``Connections.admit``): closed at
    once, before a byte is read or written, whatever protocol it would
    speak (under TLS, before the handshake)."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()


class PipeSite(server.Site):
    """A Site that builds :class:`PipeChannel` and :class:`PipeRequest`."""

    # Twisted's own protocol switch would hand h2 to its H2Connection, whose
    # streams' flow control the pipe does not drive: PipeChannel turns to
    # http2.H2Channel itself.
    protocol = PipeChannel  # type: ignore[assignment]  # Twisted types it as its h2-switching wrapper
    requestFactory = PipeRequest
    headerTimeout: Optional[float] = 20.0
    maxHeaders = 100
    totalHeadersSize = 16384
    #: HTTP/2 (http2.py): spoken at all; each stream's window step; the
    #: streams a connection may have open at once.
    h2Enabled = True
    h2Window = 256 * 1024
    h2MaxStreams = 100
    #: What one client's HTTP/2 connections share (``http2.Peers``: frame
    #: budgets, waiting senders), made at the first HTTP/2 connection.
    h2Peers: Any = None

    def acceptableProtocols(self) -> List[bytes]:
        """What TLS offers by ALPN: h2 (http2.py, which PipeChannel hands
        the connection to) and HTTP/1.1."""
        return [b"h2", b"http/1.1"] if self.h2Enabled else [b"http/1.1"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Open connections, so a shutdown can wait for their last bytes, and
        #: what each client holds through them (its cap, its queued bytes).
        self.channels = Connections()

    def buildProtocol(self, addr: Any) -> Any:
        tab = self.channels.admit(addr)
        if tab is None:
            # Its client holds as many connections as it may: closed before
            # a byte is read or written, HTTP/1.1 and HTTP/2 alike.
            registry = getattr(self, "registry", None)
            if registry is not None:
                registry.observer.rejected("", "connection_limit")
            return RefusedConnection()
        channel = super().buildProtocol(addr)
        if channel is None:
            tab.close()
            return None
        channel.tab = tab
        channel.headerTimeout = self.headerTimeout
        channel.maxHeaders = self.maxHeaders
        channel.totalHeadersSize = self.totalHeadersSize
        channel.MAX_LENGTH = self.totalHeadersSize
        return channel

    def log(self, request: Any) -> None:
        """One access line per request (logs.access_line)."""
        access_line(request, self.reactor.seconds())


if _twisted.ALPN_SET_PER_CONNECTION:
    # No ALPN then: clients speak HTTP/1.1, their default, all the same.
    # tests/test_twisted_internals.py checks both ways on real handshakes.
    classImplementsOnly(PipeSite, IProtocolFactory, ILoggingContext)
