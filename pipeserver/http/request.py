"""The request both protocols serve: its body handed on as it arrives.

:class:`PipeRequest` is Twisted's request made to stream: PUT and POST are
rendered at header time and their body goes to a :class:`BodySink` (the
pipe's sender, parties.py) chunk by chunk, never spooled. The HTTP/1.1
channel (channel.py) and the HTTP/2 stream (h2stream.py) each build it;
the head checks they share (the target's bytes, ``Expect``) are here too.
Twisted's private names it needs come through _twisted.py.
"""

# twisted.web's request is untyped, and this module subclasses and calls it
# from typed code.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import io
import time
from typing import Any, List, Optional, Protocol, Sequence

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers

from pipeserver import errors
from pipeserver.http import _twisted
from pipeserver.headers import HardenedRequest, http_date
from pipeserver.domain.interfaces import Outcome

#: The methods whose body is streamed to a pipe, dispatched at header time.
STREAMED_METHODS = (b"PUT", b"POST")

log = Logger()


class BodySink(Protocol):
    """Where a streamed request's body goes (``parties.Upload`` is one)."""

    def bodyChunk(self, data: bytes) -> None: ...

    def bodyChunks(self, pieces: List[Any]) -> None:
        """Several body pieces of one read (see chunked.py)."""

    def bodyEnded(self) -> None: ...

    def halfClosed(self) -> None:
        """Its client sent a FIN after its whole body (HTTP/1.1)."""

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

    def process(self) -> None:
        # Twisted's, less what a leaf root (PipeResource) never needs: the
        # traversal, and a Date formatted per request (_twisted.process_leaf).
        if not _twisted.process_leaf(self, http_date()):
            super().process()

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
        sink.bodyChunks(pieces)

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
