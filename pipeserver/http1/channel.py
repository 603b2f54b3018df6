"""HTTP/1.1: the channel that streams request bodies instead of spooling them.

Stock twisted.web renders a request only once its whole body is in, spooled
to memory or to a temporary file. A pipe must render at header time and pass
each body chunk on as it arrives, so this module subclasses the channel (the
request is request.py's). It leans on names Twisted documents as "not intended for
users" (``gotLength``, ``handleContentChunk``, ``requestReceived``); every
private name it needs is reached through _twisted.py (``StreamingChannel``,
its base), which checks them at import. How the modules fit: see
docs/ARCHITECTURE.md.
"""

# twisted.web's channel is untyped, and this module subclasses
# and calls them from typed code.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import socket
from typing import Any, Callable, List, Optional

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from pipeserver import errors
from pipeserver.http import _twisted
from pipeserver.http.chunked import ViewChunkedDecoder
from pipeserver.http.connections import Tab, uncounted_tab
from pipeserver.http.fastpath import PEEK_MAX, buffered_bytes, kernel_unread, peek, read_heads
from pipeserver.http.gate import BACKLOG, CHANNEL, ReadGate
from pipeserver.errors import Rejection
from pipeserver.headers import head
from pipeserver.http.parties import ConnectionDownload, ConnectionUpload, PipeRequestLike
from pipeserver.domain.pipe import Pipe
from pipeserver.http.settings import SiteView
from pipeserver.http.request import STREAMED_METHODS, PipeRequest, _unsafeFieldValue, expects_only_continue, target_ok

#: Why a PipeChannel starts no next request (``PipeChannel._stalls``): its
#: own responses are not taken; its client's are not (over its budget).
_OWN = 1
_CLIENT = 2

log = Logger()



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
    site: SiteView
    #: Its line in its client's account (``PipeSite.buildProtocol``; one that
    #: counts nothing for a channel built otherwise).
    tab: Optional[Tab] = None
    #: Why no next request starts: its own responses, or its client's, are
    #: not taken (``_OWN``, ``_CLIENT`` bits).
    _stalls = 0
    #: Bytes of its finished responses it has written on its tab.
    _heldCounted = 0
    _readClosed = False
    #: Its local address, once asked (``getHost``).
    _host: Any = None

    def getHost(self) -> Any:
        # Every Request asks (Request.__init__), and a TCP transport asks
        # the kernel each time (getsockname); a connection's local address
        # does not change.
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def _inFlight(self) -> Optional[PipeRequest]:
        """The request being read (the site's requestFactory made it)."""
        return self.requests[-1] if self.requests else None

    def _uploadWhole(self) -> bool:
        """Whether the request in flight is a send whose body has all been read."""
        request = self._inFlight()
        return (
            request is not None
            and request.bodySink is not None
            and request.bodyComplete
            and not request.finished
        )

    def readConnectionLost(self) -> None:
        if self._readClosed:
            return  # again, once a paused transport reads on: nothing new
        self._readClosed = True
        request = self._inFlight()
        if request is not None and request.endedBy is not None and request.bodySink is not None:
            # Its pipe failed the sender and shut our side already
            # (parties.close_failing): with its side shut too, nothing is
            # left to read or send, so the connection goes now, not at the
            # linger's cut.
            self.transport.loseConnection()
        elif self._uploadWhole():
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
        request = self._inFlight()
        if request is not None and request.bodySink is not None:
            request.bodySink.halfClosed()

    def bodyInKernel(self, sock: socket.socket) -> bool:
        """Whether the rest of the upload in flight is in ``sock``'s kernel
        buffer, unread (the sender is paused), so the sender's FIN is a
        half-close after a whole body rather than a hang-up."""
        request = self._inFlight()
        if request is None or request.bodySink is None:
            return False
        if self._uploadWhole():
            return True
        queued = kernel_unread(sock)
        if queued is None:
            return False
        held = self.bufferedBody()
        length = request.bodyLength
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
    #: Hands the connection to HTTP/2 if its first bytes ask for it
    #: (``http2.turn``: True handed over, False not, None not known yet);
    #: set by the site that speaks HTTP/2 (site.py), which sits above both.
    turn: Optional[Callable[["PipeChannel", bytes], Optional[bool]]] = None

    def _turnsToHTTP2(self, data: bytes) -> bool:
        """Whether the connection (first bytes ``data``) went to HTTP/2, or
        waits for more bytes to tell."""
        if self.turn is None:
            self._sniffed = None
            return False
        verdict = self.turn(self, data)
        if verdict is None:
            self._sniffed = data
            return True
        self._sniffed = None
        return verdict

    def leave(self) -> None:
        """Give up the connection to another protocol (http2.handover):
        its timers, its place as the transport's producer and in the site
        (its tab goes with the connection, to the protocol that takes it)."""
        self._cancelHeaderTimer()
        self.setTimeout(None)
        self.transport.unregisterProducer()
        self.site.channels.handOver(self)

    # -- a client that does not take its responses
    def rawDataReceived(self, data: bytes) -> None:
        super().rawDataReceived(data)
        if self.handlingRequest() and self.pipelinedBytes() > self.pipelinedMax():
            # Twisted pauses here only if the transport has not paused it
            # already, and resumes reading when the transport drains: a
            # client that neither reads nor stops sending was read forever.
            self.gate.hold(CHANNEL)

    # ---- the parties of its requests (parties.HTTPParties asks)
    def makeSender(self, pipe: Pipe, request: PipeRequestLike) -> ConnectionUpload:
        """A sender on this connection, held back by its read gate."""
        return ConnectionUpload(pipe, request, self.gate)

    def makeReceiver(self, pipe: Pipe, request: PipeRequestLike) -> ConnectionDownload:
        """A receiver on this connection, written straight to its socket."""
        return ConnectionDownload(pipe, request)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if not isinstance(headers, Headers):  # Twisted's old pairs: its own way
            super().writeHeaders(version, code, reason, headers)
            return
        self.transport.write(head(version, code, reason, headers))

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
        self.site.rejected(reason)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.markHeadersTooLarge()
        self.badRequest()

    def chunkedDecoder(self, stock: Any) -> ViewChunkedDecoder:
        # A chunked body is decoded without copying its bytes (chunked.py).
        fast = ViewChunkedDecoder(stock.dataCallback, stock.finishCallback)
        request: PipeRequest = self.requests[-1]
        fast.batchCallback = request.handleContentChunks
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
        self.site.channels.opened(self, self.tab)
        # No client address in the log, not even in what Twisted logs for
        # this connection (its HTTP/2 successor's too: the same transport).
        _twisted.hide_peer_in_log_prefix(self.transport)
        # A waiting sender keeps only what came with its head (fastpath.HEAD_READ).
        read_heads(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelHeaderTimer()
        self.site.channels.discard(self)
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
            if command in STREAMED_METHODS:
                request.setRequestLine(command, path, version)
                rejection = self.site.checkBeforeBody(request)
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
