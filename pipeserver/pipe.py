"""The pipe: one sender, K receivers, a rendezvous deadline and backpressure.

A :class:`Pipe` is the only place where the state of a transfer changes; read
its methods top to bottom to follow a transfer's life. :class:`Upload` and
:class:`Download` adapt the sender's and the receivers' HTTP requests to it,
and :class:`PipeRegistry` maps ``(project, path)`` to the pipe that holds it.

The upload is paused (its transport stops reading, so the kernel holds the
bytes) while the pipe waits and while any receiver cannot take more; it reads
again only once every receiver can.
"""

from __future__ import annotations

import enum
import fcntl
import socket
import struct
import termios
from typing import Dict, Iterable, List, Optional, Protocol, Set, Tuple

from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from pipeserver import errors
from pipeserver.headers import passable
from pipeserver.multipart import FirstPartDecoder, MultipartError, boundary_of

log = Logger()

Key = Tuple[str, bytes]

# How long a party we closed may keep its socket to drain what it was sent.
CLOSE_GRACE = 10.0

#: What one read of a sender may bring in: ``READ_MIN`` (Twisted's own read
#: size) plus the room every receiver's kernel send buffer still has, up to
#: ``READ_MAX``. Bigger reads cut the per-read cost (see docs/BENCHMARKS.md),
#: and since the kernels can take all but ``READ_MIN`` (plus under
#: ``SIZING_STEP``) of such a read at once, the server still holds at most
#: about 64 KiB per receiver.
READ_MIN = 65536
READ_MAX = 1 << 20
#: The read size is set again once this much has been read since the last
#: time (reads start at READ_MIN, Twisted's own size).
SIZING_STEP = 16384
#: A sender that brings at least ``BULK_BYTES`` per ``BULK_WINDOW`` seconds
#: (200 MB/s) is read only once that much has queued (SO_RCVLOWAT): at full
#: speed the reactor would otherwise wake for every ~64 KiB the client
#: wrote, and those wake-ups, not the bytes, were most of the server's CPU
#: (docs/BENCHMARKS.md). While it is on, a check every ``BULK_WINDOW`` turns
#: it off as soon as the sender falls below that rate, so bytes left short of
#: the mark (a pause, a chunked body's end) wait at most two windows.
BULK_BYTES = 1 << 20
BULK_WINDOW = 0.005
#: How often a paused receiver of a fan-out pipe is looked at, per
#: ``--stall-timeout``: one that took no byte for that long is cut within a
#: quarter more of it.
STALL_LOOKS = 4
# How long a sender we shut still has its upload read (and dropped), so it
# reads our last lines rather than a reset; short, since many clients (curl
# -T -) only report the failure once the connection is cut.
SENDER_LINGER = 2.0


class Watcher(Protocol):
    """Tells when the peer of a paused transport goes away (see channel.py)."""

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


class Observer(Protocol):
    """Told of a pipe's milestones (metrics.py has one); never per byte."""

    def transferStarted(self, pipe: "Pipe") -> None:
        """``pipe`` is established: its parties stop waiting, bytes flow."""

    def pipeEnded(self, pipe: "Pipe", how: str) -> None:
        """``pipe`` left the registry: completed, aborted, timed out, left,
        shut down. ``pipe.bytes`` is final."""

    def rejected(self, project: str, reason: str) -> None:
        """A request was answered with an error (``Rejection.reason``)."""


class NullObserver:
    def transferStarted(self, pipe: "Pipe") -> None:
        pass

    def pipeEnded(self, pipe: "Pipe", how: str) -> None:
        pass

    def rejected(self, project: str, reason: str) -> None:
        pass


def display_path(path: bytes) -> str:
    return path.decode("utf-8", "replace")


def buffered_bytes(transport: object) -> int:
    """Bytes a Twisted transport holds in user space, waiting for the socket."""
    buffer = getattr(transport, "dataBuffer", b"")
    offset = getattr(transport, "offset", 0)
    temp = getattr(transport, "_tempDataLen", 0)
    try:
        return max(0, len(buffer) - offset) + temp
    except TypeError:
        return 0


def _close(transport: object, clock: IReactorTime, half: bool = False) -> None:
    """Close a connection so its client sees a failure, not a clean end.

    What is already buffered is still sent; a peer that does not take it
    within ``CLOSE_GRACE`` seconds is cut. With ``half`` only our side is shut,
    so a sender still uploading reads our last lines instead of a reset, and
    it is cut after ``SENDER_LINGER`` seconds.
    """
    shut = getattr(transport, "loseWriteConnection", None)
    if half and shut is not None:
        shut()
        resume = getattr(transport, "resumeProducing", None)
        if resume is not None:
            resume()
    else:
        transport.loseConnection()  # type: ignore[attr-defined]

    def cut() -> None:
        if getattr(transport, "connected", False) and hasattr(
            transport, "abortConnection"
        ):
            transport.abortConnection()  # type: ignore[attr-defined]

    clock.callLater(SENDER_LINGER if half and shut is not None else CLOSE_GRACE, cut)


def _reset(transport: object) -> None:
    """Close with a RST (SO_LINGER 0), which a client reports as a failure."""
    handle = getattr(transport, "getHandle", None)
    try:
        sock = handle() if handle is not None else None
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already gone: nothing left to mistake for a clean end
    transport.abortConnection()  # type: ignore[attr-defined]


def _direct_socket(transport: object) -> Optional[socket.socket]:
    """The socket under a plain TCP transport, which :meth:`Download.write`
    may send on directly; None for anything else (TLS, tests' fakes)."""
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return None
    sock = getattr(transport, "socket", None)
    return sock if isinstance(sock, socket.socket) else None


def send_buffered_now(transport: object) -> None:
    """Send what a plain TCP transport holds for its socket now, rather than
    on the reactor's next turn (when it is reported writable); what the
    kernel does not take stays queued, in order. Anything else: no-op."""
    sock = _direct_socket(transport)
    if (
        sock is None
        or transport.offset < len(transport.dataBuffer)  # type: ignore[attr-defined]
        or transport.disconnecting  # type: ignore[attr-defined]
        or not transport.connected  # type: ignore[attr-defined]
    ):
        return
    pending: List[bytes] = transport._tempDataBuffer  # type: ignore[attr-defined]
    if not pending:
        return
    data = b"".join(pending)
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        return  # the transport meets the error in its own time
    rest = data[sent:]
    transport._tempDataBuffer = [rest] if rest else []  # type: ignore[attr-defined]
    transport._tempDataLen = len(rest)  # type: ignore[attr-defined]


#: How many :meth:`Download.room` calls reuse one reading of SO_SNDBUF.
#: The kernel changes it rarely (autotuning grows it; memory pressure may
#: shrink it), and a stale value errs for at most this many reads.
SNDBUF_RECHECK = 32


def send_buffer(sock: socket.socket) -> int:
    """The kernel's send buffer size for ``sock`` (0 when unknown)."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except (OSError, ValueError):
        return 0


def kernel_queued(sock: socket.socket) -> int:
    """Bytes the kernel holds for ``sock``, unsent or unacknowledged (0 when
    unknown)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


def kernel_room(sock: socket.socket, size: Optional[int] = None) -> int:
    """Bytes the kernel will still take on ``sock`` without blocking (an
    estimate on the safe side: half the send buffer, which also pays for the
    kernel's overhead, less what it holds unsent or unacknowledged).
    ``size`` is the send buffer's size if known (see :func:`send_buffer`)."""
    try:
        if size is None:
            size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0
    return max(0, size // 2 - queued)


def _content_type(value: bytes) -> bytes:
    """``text/html`` is served as ``text/plain`` so a pipe cannot host pages.

    Each comma-separated item is rewritten: browsers take the last valid
    type of ``text/plain, text/html``. (The receiver's CSP sandbox keeps
    script from running whatever the type; this keeps HTML from rendering.)"""
    if b"," in value:
        return b",".join(_content_type(item) for item in value.split(b","))
    mime, sep, params = value.partition(b";")
    if mime.strip().lower() == b"text/html":
        space = mime[: len(mime) - len(mime.lstrip())]
        return space + b"text/plain" + sep + params
    return value


class Upload:
    """The sender's request, as its pipe sees it.

    It is the request's body sink: the HTTP layer hands it body chunks as
    they arrive, the end of the body, and the loss of the connection.
    """

    #: The client address it counts against while in its pipe (None after).
    client: Optional[str] = None

    def __init__(self, pipe: "Pipe", request: "PipeRequestLike") -> None:
        self.pipe = pipe
        self.request = request
        self.transport = request.transport
        # HTTP/1.0, or a proxy that cannot stream a response while it still
        # sends the request body (nginx; see docs/proxies.md): every line at
        # the end, in one response.
        self._buffered = (
            request.clientproto != b"HTTP/1.1"
            or request.getHeader(b"x-pipe-progress") == b"at-end"
        )
        self._lines: List[bytes] = []
        self.reading = True
        self.decoder: Optional[FirstPartDecoder] = None
        ctype = request.getHeader(b"content-type")
        if ctype is not None:
            boundary = boundary_of(ctype)
            if boundary is not None:
                self.decoder = FirstPartDecoder(boundary)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"access-control-allow-origin", b"*")
        request.bodySink = self

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
        if self._buffered:
            body = b"".join(self._lines)
            self.request.setHeader(b"content-length", b"%d" % len(body))
            self.request.write(body)
        self.request.finish()

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
        now: receivers' heads go straight to theirs (``Download._flushHead``),
        and a client may wait for the sender's response before it reads the
        receivers' (piping-server's own tests do)."""
        send_buffered_now(self.transport)

    def close(self, clock: IReactorTime) -> None:
        self.pipe.watcher.unwatch(self.transport)
        self.reading = True  # _close reads on, so the client sees our lines
        _close(self.transport, clock, half=True)

    # -- reading the body
    @property
    def sizable(self) -> bool:
        """Whether the pipe may set how much one read of this sender takes."""
        return _direct_socket(self.transport) is not None

    def unread(self) -> Optional[int]:
        """Body bytes still to come, if the sender said how many."""
        length: Optional[int] = getattr(self.request, "bodyLength", None)
        if length is None:
            return None
        return max(0, length - getattr(self.request, "bodyBytes", 0))

    def setLowWater(self, size: int) -> None:
        """Have the reactor see this sender readable only once ``size``
        bytes (or its end) have arrived."""
        sock = _direct_socket(self.transport)
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
            except OSError:
                pass  # gone, or not a socket that has one: reads stay small

    def setReading(self, reading: bool) -> None:
        if reading == self.reading:
            return
        self.reading = reading
        if reading:
            self.pipe.watcher.unwatch(self.transport)
            self.transport.resumeProducing()
        else:
            # Never the channel's pauseProducing: that is its write-buffer signal.
            self.transport.pauseProducing()
            if self.pipe.state is State.WAITING:
                self.pipe.watcher.watch(self.transport)

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
                headers.append((b"Content-Type", _content_type(value)))
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

    def bodyChunks(self, pieces: List[bytes]) -> None:
        self.pipe.writeSequence(pieces)

    def bodyEnded(self) -> None:
        self.pipe.bodyEnded()

    def connectionLost(self, reason: Failure) -> None:
        self.pipe.watcher.unwatch(self.transport)
        self.pipe.senderLost(self)


@implementer(IPushProducer)
class Download:
    """A receiver's request: a push producer registered on it once streaming.

    Its transport pauses it when its write buffer is full; the pipe then
    pauses the upload until every receiver can take more.
    """

    #: The client address it counts against while in its pipe (None after).
    client: Optional[str] = None

    def __init__(self, pipe: "Pipe", request: "PipeRequestLike") -> None:
        self.pipe = pipe
        self.request = request
        self.transport = request.transport
        # Twisted would otherwise label the bytes text/html.
        request.defaultContentType = None
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, reason: Failure) -> None:
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
        request.setResponseCode(200)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        request.registerProducer(self, True)
        request.write(b"")
        self._socket = _direct_socket(self.transport)
        self._chunked = bool(getattr(request, "chunked", False))
        self._flushHead()

    def _flushHead(self) -> None:
        """Send the response head, which ``request.write`` left in the
        transport's buffer, now rather than on the reactor's next turn: the
        first body bytes can then go straight to the socket too, and a small
        body reaches its receiver before the server turns to anything else."""
        sock = self._socket
        transport = self.transport
        if (
            sock is None
            or transport.offset < len(transport.dataBuffer)  # type: ignore[attr-defined]
            or transport.disconnecting  # type: ignore[attr-defined]
            or not transport.connected  # type: ignore[attr-defined]
        ):
            return
        pending: List[bytes] = transport._tempDataBuffer  # type: ignore[attr-defined]
        if not pending:
            return
        head = b"".join(pending)
        try:
            sent = sock.send(head)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the transport meets the error in its own time
        rest = head[sent:]
        transport._tempDataBuffer = [rest] if rest else []  # type: ignore[attr-defined]
        transport._tempDataLen = len(rest)  # type: ignore[attr-defined]

    _socket: Optional[socket.socket] = None
    _chunked = False
    _sndbuf = 0
    _roomCalls = 0

    def _idleSocket(self) -> Optional[socket.socket]:
        """The socket, while the transport holds nothing unsent (else None):
        only then may bytes go to it directly without reordering."""
        sock = self._socket
        transport = self.transport
        if (
            sock is None
            or transport._tempDataLen  # type: ignore[attr-defined]
            or transport.offset < len(transport.dataBuffer)  # type: ignore[attr-defined]
        ):
            return None
        return sock

    def room(self) -> int:
        """What this receiver's kernel can take at once (0 when unknown, or
        while its transport still holds bytes)."""
        sock = self._idleSocket()
        if sock is None:
            return 0
        self._roomCalls -= 1
        if self._roomCalls <= 0:
            self._roomCalls = SNDBUF_RECHECK
            self._sndbuf = send_buffer(sock)
        return kernel_room(sock, self._sndbuf)

    def write(self, data: "bytes | memoryview") -> None:
        self.writeSequence([data], len(data))

    def writeSequence(self, pieces: List["bytes | memoryview"], size: int) -> None:
        """Send body bytes (``size`` in all), framed as the response needs.

        The data path's hot spot: while the transport holds nothing unsent,
        the pieces (as one chunk, its framing added without a copy) go
        straight to the socket in one ``sendmsg``; only what the kernel does
        not take is left to the transport, which buffers it and pauses us
        once it holds more than its ``bufferSize`` (64 KiB), exactly as
        ``request.write`` would. Anything unusual (TLS, a transport with bytes
        queued, one that is closing) takes ``request.write``.
        """
        sock = self._idleSocket()
        transport = self.transport
        if (
            sock is None
            or transport.disconnecting  # type: ignore[attr-defined]
            or not transport.connected  # type: ignore[attr-defined]
            or self.request.finished  # type: ignore[attr-defined]
        ):
            if len(pieces) == 1:
                self.request.write(bytes(pieces[0]))
            else:
                self.request.write(b"".join(pieces))
            return
        self.request.sentLength += size  # type: ignore[attr-defined]
        if len(pieces) > 256:  # far below IOV_MAX, framing included
            pieces = [b"".join(pieces)]
        if self._chunked:
            parts: List["bytes | memoryview"] = [b"%x\r\n" % size, *pieces, b"\r\n"]
        else:
            parts = pieces
        try:
            sent = sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Let the transport meet the error in its own time.
            transport.writeSequence([bytes(part) for part in parts])  # type: ignore[attr-defined]
            return
        rest: List[bytes] = []
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            rest.append(bytes(part[sent:]) if sent or type(part) is not bytes else part)
            sent = 0
        if rest:
            transport.writeSequence(rest)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.request.unregisterProducer()
        self.request.finish()

    def close(self, clock: IReactorTime) -> None:
        """End before the response does: a chunked stream gets no last chunk,
        a counted one comes up short, so the client knows it is truncated."""
        if self.request.producer is not None:
            self.request.unregisterProducer()
        if not self._chunked and not self.request.responseHeaders.hasHeader(b"content-length"):
            # Neither framing: the end of the connection ends the body, so a
            # clean FIN would pass the truncated stream off as whole (HTTP/1.0).
            _reset(self.transport)
            return
        _close(self.transport, clock)

    def taken(self) -> int:
        """Bytes of the response its client has taken so far (what was
        written less what the transport and our kernel still hold): it
        grows as long as the client reads. The kernel's share counts: a
        socket with a large send buffer becomes writable again only once
        much of it is free, so a client reading slowly may take bytes for
        seconds without the transport's buffer moving."""
        sent: int = getattr(self.request, "sentLength", 0)
        held = buffered_bytes(self.transport)
        # Under TLS, the TCP transport below holds the (encrypted) bytes.
        below = self.transport
        for _ in range(3):
            if isinstance(below, tcp.Connection):
                if below is not self.transport:
                    held += buffered_bytes(below)
                sock = getattr(below, "socket", None)
                if isinstance(sock, socket.socket):
                    held += kernel_queued(sock)
                break
            below = getattr(below, "transport", None)
        return sent - held

    def cut(self) -> None:
        """End a receiver that stopped reading: it would never take what a
        graceful close must still send, so the connection is aborted (the
        response is truncated) at once, freeing what it holds."""
        if self.request.producer is not None:
            self.request.unregisterProducer()
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()  # type: ignore[attr-defined]

    def reject(self, status: int, text: str) -> None:
        request = self.request
        body = (text + "\n").encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"access-control-allow-origin", b"*")
        if status == 503:
            request.setHeader(b"retry-after", b"5")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()


class PipeRequestLike(Protocol):
    """What the pipe needs of a request (``channel.PipeRequest`` provides it)."""

    transport: object
    clientproto: bytes
    requestHeaders: Headers
    responseHeaders: Headers
    producer: object
    bodySink: object
    defaultContentType: Optional[bytes]

    def getHeader(self, key: bytes) -> Optional[bytes]: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self): ...  # type: ignore[no-untyped-def]

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


class State(enum.Enum):
    WAITING = "waiting"
    STREAMING = "streaming"
    DONE = "done"


class Pipe:
    """The rendezvous and transfer on one ``(project, path)``.

    Waiting: parties join until the sender and all K receivers are there, or
    the deadline (a ``callLater`` on the injected clock) releases them all.
    Streaming: body bytes go to every receiver; any paused receiver pauses
    the upload. Done: the pipe has left the registry and ignores everything.
    """

    def __init__(self, registry: "PipeRegistry", key: Key, n: int) -> None:
        self.registry = registry
        self.clock = registry.clock
        self.watcher = registry.watcher
        self.key = key
        self.path = display_path(key[1])
        self.n = n
        self.state = State.WAITING
        self.sender: Optional[Upload] = None
        self.receivers: List[Download] = []
        self.started = False
        self.bytes = 0
        self._pending: List[bytes] = []
        self._bodyEnded = False
        self._paused: Set[Download] = set()
        #: A look at each paused receiver, to cut it if it takes no byte.
        self._stallTimers: Dict[Download, IDelayedCall] = {}
        #: Receivers that resumed since their last look.
        self._resumed: Set[Download] = set()
        self._waitingReported = 0
        self._deadline: Optional[IDelayedCall] = self.clock.callLater(
            registry.wait_timeout, self._expire
        )

    def _syncWaiting(self) -> None:
        """Keep the registry's count of waiting parties (for its limits) true."""
        now = 0
        if self.state is State.WAITING:
            now = len(self.receivers) + (self.sender is not None)
        if now != self._waitingReported:
            self.registry.adjustWaiting(self.key[0], now - self._waitingReported)
            self._waitingReported = now

    def completes(self, receiver: bool) -> bool:
        """Whether one more sender (or receiver) would establish this pipe."""
        if self.state is not State.WAITING:
            return False
        if receiver:
            return self.sender is not None and len(self.receivers) == self.n - 1
        return self.sender is None and len(self.receivers) == self.n

    # ---- joining
    def addSender(self, request: PipeRequestLike, n: int, client: str = "") -> Upload:
        if self.state is not State.WAITING:
            raise errors.established(self.path)
        if self.sender is not None:
            raise errors.second_sender(self.path)
        if n != self.n:
            raise errors.n_mismatch(self.n, n)
        upload = self.sender = Upload(self, request)
        self._join(upload, client)
        upload.say(f"[INFO] Waiting for {self.n} receiver(s)...")
        if self.receivers:
            upload.say(f"[INFO] {len(self.receivers)} receiver(s) has/have been connected.")
        # A body that ended with its headers (small, or empty) needs no pause.
        self._bodyEnded = getattr(request, "bodyComplete", False)
        if not self._maybeEstablish() and not self._bodyEnded:
            upload.setReading(False)
        self._syncWaiting()
        return upload

    def addReceiver(self, request: PipeRequestLike, n: int, client: str = "") -> Download:
        if self.state is not State.WAITING:
            raise errors.established(self.path)
        if n != self.n:
            raise errors.n_mismatch(self.n, n)
        if len(self.receivers) >= self.n:
            raise errors.receivers_full()
        download = Download(self, request)
        self.receivers.append(download)
        self._join(download, client)
        if self.sender is not None:
            self.sender.say("[INFO] A receiver was connected.")
        self._maybeEstablish()
        self._syncWaiting()
        return download

    def _join(self, party: "Upload | Download", client: str) -> None:
        """Count ``party`` against its client until it leaves the pipe."""
        party.client = client
        self.registry.adjustClient(client, 1)

    def _leave(self, party: "Upload | Download") -> None:
        if party.client is not None:
            self.registry.adjustClient(party.client, -1)
            party.client = None

    def _maybeEstablish(self) -> bool:
        if self.sender is None or len(self.receivers) < self.n:
            return False
        self.state = State.STREAMING
        self._cancelDeadline()
        self._syncWaiting()
        self.sender.say(f"[INFO] Start sending to {self.n} receiver(s)!")
        # The sender hears of it before any receiver does.
        self.sender.flush()
        self.registry.established(self)
        pending, self._pending = self._pending, []
        self._startReceivers()
        for data in pending:
            self.write(data)
        if self._bodyEnded and self.state is State.STREAMING:
            self._complete()
        else:
            self._updateReading()
        return True

    def _startReceivers(self) -> None:
        if self.started or self.sender is None:
            return
        headers = self.sender.receiverHeaders()
        if headers is None:
            return
        self.started = True
        for download in list(self.receivers):
            download.start(headers)

    # ---- the body
    def write(self, data: "bytes | memoryview") -> None:
        """A chunk of the sender's body (IConsumer.write).

        ``data`` may be a ``memoryview`` of the read it came in (see
        chunked.py); it is copied only where it must outlive this call."""
        if self.state is State.STREAMING:
            upload = self.sender
            assert upload is not None
            if upload.decoder is not None:
                try:
                    data = upload.decoder.feed(bytes(data))
                except MultipartError:
                    self._fail()
                    return
                self._startReceivers()
            if data:
                self.bytes += len(data)
                for download in self.receivers:
                    download.write(data)
            self._sizeReads(len(data))
        elif self.state is State.WAITING:
            # Read before the pause took hold: at most about one read.
            self._pending.append(bytes(data))

    def writeSequence(self, pieces: List["bytes | memoryview"]) -> None:
        """Several chunks of the sender's body, from one read."""
        upload = self.sender
        if self.state is not State.STREAMING or upload is None:
            for data in pieces:
                self.write(data)
            return
        if upload.decoder is not None:
            # One feed per read, not per chunk: a form sent in 1-byte chunks
            # would otherwise cost a decoder call and a receiver write (and
            # chunk framing) per byte. The decoder's output does not depend
            # on how its input is split.
            self.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            return
        size = sum(len(data) for data in pieces)
        if size:
            self.bytes += size
            for download in self.receivers:
                download.writeSequence(pieces, size)
        self._sizeReads(size)

    def bodyEnded(self) -> None:
        self._bodyEnded = True
        if self.state is State.WAITING and self.sender is not None:
            # Nothing more to hold back; reading again lets us see a hang-up.
            self.sender.setReading(True)
        elif self.state is State.STREAMING:
            self._complete()

    def _complete(self) -> None:
        upload = self.sender
        assert upload is not None
        if upload.decoder is not None and not upload.decoder.done:
            self._fail()
            return
        upload.say("[INFO] Sent successfully!")
        for download in list(self.receivers):
            download.finish()
        received = len(self.receivers)
        if received == self.n:
            upload.say("[INFO] All receiver(s) was/were received successfully.")
        else:
            upload.say(f"[INFO] {received} of {self.n} receiver(s) received successfully.")
        upload.finish()
        self._end("completed")

    def _fail(self, cut: bool = False) -> None:
        """The body broke: truncate every receiver and drop the sender.
        With ``cut`` (a shutdown's grace is over) receivers are aborted at
        once rather than left to drain what is buffered for them."""
        for download in list(self.receivers):
            if cut:
                download.cut()
            else:
                download.close(self.clock)
        if self.sender is not None:
            self.sender.close(self.clock)
        self._end("aborted")

    # ---- backpressure
    def receiverPaused(self, download: Download) -> None:
        if download in self.receivers:
            self._paused.add(download)
            if download not in self._stallTimers:
                self._watchStall(download)
            self._updateReading()

    def receiverResumed(self, download: Download) -> None:
        self._paused.discard(download)
        # Its look at stalling stays: a fast receiver pauses and resumes
        # thousands of times a second, too often for a timer each time.
        self._resumed.add(download)
        self._updateReading()

    # ---- stalled receivers (fan-out only)
    def _watchStall(
        self, download: Download, taken: Optional[int] = None, since: Optional[float] = None
    ) -> None:
        """Look soon whether a paused receiver of a fan-out pipe took any
        byte since it had taken ``taken`` (at ``since``; by default now):
        one that stopped reading must not hold the others back for ever. A
        lone receiver has nobody to hold back."""
        timeout = self.registry.limits.stall_timeout
        if timeout <= 0 or self.n < 2 or self.state is not State.STREAMING:
            return
        now = self.clock.seconds()
        since = now if since is None else since
        taken = download.taken() if taken is None else taken
        self._resumed.discard(download)
        # Never past the moment it would have been idle for the timeout.
        delay = max(0.0, min(timeout / STALL_LOOKS, since + timeout - now))
        self._stallTimers[download] = self.clock.callLater(
            delay, self._checkStall, download, taken, since
        )

    def _unwatchStall(self, download: Download) -> None:
        self._resumed.discard(download)
        timer = self._stallTimers.pop(download, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _checkStall(self, download: Download, taken: int, since: float) -> None:
        self._stallTimers.pop(download, None)
        if download not in self._paused or self.state is not State.STREAMING:
            # Reading again: the next pause looks anew.
            self._resumed.discard(download)
            return
        now = download.taken()
        if now > taken or download in self._resumed:
            # Slow, but it takes bytes (a resume means it took them all).
            self._watchStall(download, now)
            return
        timeout = self.registry.limits.stall_timeout
        if self.clock.seconds() - since < timeout:
            self._watchStall(download, taken, since)
            return
        log.info(
            "A receiver on {path} took no byte for {timeout}s and was cut",
            path=self.path,
            timeout=errors.seconds(timeout),
        )
        self._drop(download)
        download.cut()
        self._receiverGoneMidway(
            f"[INFO] A receiver was cut: it took no bytes for {errors.seconds(timeout)} seconds."
        )

    def _updateReading(self) -> None:
        if self.sender is not None and self.state is State.STREAMING:
            if not self._paused:
                self._sizeReads()
            self.sender.setReading(not self._paused)

    def _sizeReads(self, got: int = 0) -> None:
        """Let the sender's next read be as big as every receiver can take,
        and (``got`` being what this read brought) wait for a bulk sender's
        bytes to pile up before reading them (see ``BULK_BYTES``)."""
        upload = self.sender
        if upload is None or not upload.sizable or self.state is not State.STREAMING:
            return
        self._unsized += got
        if self._unsized >= SIZING_STEP:
            # Every byte read since the last look went to the receivers'
            # kernels, so their room is now at least what it was less those
            # bytes: a read errs by under SIZING_STEP, and a small message
            # costs no look at all.
            self._unsized = 0
            room = min((download.room() for download in self.receivers), default=0)
            upload.transport.bufferSize = min(READ_MAX, READ_MIN + room)
        self._windowBytes += got
        if self._bulk:
            self._fitMark(upload)
        elif got:
            now = self.clock.seconds()
            if now - self._windowStart > BULK_WINDOW:
                self._windowStart, self._windowBytes = now, got
            elif self._windowBytes >= BULK_BYTES:
                self._setBulk(True)

    _unsized = 0
    _bulk = False
    _bulkTimer: Optional[IDelayedCall] = None
    _windowStart = 0.0
    _windowBytes = 0
    _mark = 1  # the sender socket's SO_RCVLOWAT

    def _checkBulk(self) -> None:
        self._bulkTimer = None
        if self.state is State.STREAMING:
            self._setBulk(self._windowBytes >= BULK_BYTES)

    def _setBulk(self, bulk: bool) -> None:
        """Read the sender in ``BULK_BYTES`` gulps (checked again after
        ``BULK_WINDOW``), or as its bytes come."""
        upload = self.sender
        assert upload is not None
        self._bulk = bulk
        if bulk:
            self._fitMark(upload)
            self._bulkTimer = self.clock.callLater(BULK_WINDOW, self._checkBulk)
        elif self._mark != 1:
            self._mark = 1
            upload.setLowWater(1)
        self._windowStart, self._windowBytes = self.clock.seconds(), 0

    def _fitMark(self, upload: Upload) -> None:
        """A bulk read waits for ``BULK_BYTES``, or for all the rest of a
        counted body, which then needs no check to come through."""
        left = upload.unread()
        mark = BULK_BYTES if left is None else max(1, min(BULK_BYTES, left))
        if mark != self._mark:
            self._mark = mark
            upload.setLowWater(mark)

    # ---- parties leaving
    def senderLost(self, upload: Upload) -> None:
        if upload is not self.sender:
            return
        if self.state is State.WAITING:
            self._leave(upload)
            self.sender = None
            self._pending = []
            self._bodyEnded = False
            if not self.receivers:
                self._end("left")
            self._syncWaiting()
        elif self.state is State.STREAMING:
            log.info("Sender on {path} went away mid-transfer", path=self.path)
            for download in list(self.receivers):
                download.close(self.clock)
            self._end("aborted")

    def receiverLost(self, download: Download) -> None:
        if download not in self.receivers:
            return
        self._drop(download)
        if self.state is State.WAITING:
            if self.sender is None and not self.receivers:
                self._end("left")
            self._syncWaiting()
        elif self.state is State.STREAMING:
            self._receiverGoneMidway("[INFO] A receiver aborted.")

    def _drop(self, download: Download) -> None:
        self.receivers.remove(download)
        self._paused.discard(download)
        self._unwatchStall(download)
        self._leave(download)

    def _receiverGoneMidway(self, line: str) -> None:
        """A receiver left a transfer under way: tell the sender, and go on
        with the others if there are any."""
        upload = self.sender
        assert upload is not None
        upload.say(line)
        if self.receivers:
            self._updateReading()
        else:
            upload.say("[INFO] All receiver(s) was/were aborted halfway.")
            upload.close(self.clock)
            self._end("aborted")

    # ---- the deadline
    def _expire(self) -> None:
        self._deadline = None
        wait = self.registry.wait_timeout
        if self.sender is None:
            text = errors.no_sender(self.path, wait)
        else:
            text = errors.not_all_receivers(self.path, wait)
        self.release(504, text, errors.not_all_receivers(self.path, wait), "timed out")

    def release(self, status: int, receiverText: str, senderLine: str, how: str) -> None:
        """Send every waiting party away: receivers get ``status``, the
        sender its line and a connection closed before its response ends."""
        if self.state is not State.WAITING:
            return
        for download in list(self.receivers):
            download.reject(status, receiverText)
        if self.sender is not None:
            self.sender.say(senderLine)
            self.sender.close(self.clock)
        self._end(how)

    def abort(self) -> None:
        """Cut a transfer under way now: every side sees a failure, the
        receivers at once."""
        if self.state is State.STREAMING:
            self._fail(cut=True)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _end(self, how: str) -> None:
        if self.state is State.DONE:
            return
        self.state = State.DONE
        self._cancelDeadline()
        if self._bulkTimer is not None:
            self._bulkTimer.cancel()
            self._bulkTimer = None
        if self._mark != 1 and self.sender is not None:
            # The connection may carry another request, or be read to its end.
            self._bulk, self._mark = False, 1
            self.sender.setLowWater(1)
        if self.sender is not None and self.sender.sizable:
            # Likewise the read size: the next PUT on this connection would
            # otherwise have up to READ_MAX of its body read with its head,
            # before any receiver is there (SPEC §2).
            self.sender.transport.bufferSize = READ_MIN  # type: ignore[attr-defined]
        self._syncWaiting()
        for download in list(self._stallTimers):
            self._unwatchStall(download)
        for party in [self.sender, *self.receivers]:
            if party is not None:
                self._leave(party)
        self._pending = []
        self._paused.clear()
        self.registry.remove(self, how)

    # ---- observation
    def bytesHeld(self) -> int:
        held = sum(len(data) for data in self._pending)
        for download in self.receivers:
            held += buffered_bytes(download.transport)
        return held


class Limits:
    """How much the registry admits; past a limit a request gets a 503.

    ``max_parties_per_client`` caps the parties (senders and receivers,
    waiting or transferring) one client address holds at once;
    ``max_waiting_per_project`` applies only when tokens are configured
    (None: not at all), since without them everybody is one project.
    """

    def __init__(
        self,
        max_receivers: int = 256,
        max_waiting: int = 4096,
        max_waiting_per_project: Optional[int] = 1024,
        max_parties_per_client: Optional[int] = None,
        stall_timeout: float = 60.0,
    ) -> None:
        self.max_receivers = max_receivers
        self.max_waiting = max_waiting
        self.max_waiting_per_project = max_waiting_per_project
        self.max_parties_per_client = max_parties_per_client
        #: Seconds a receiver of a fan-out pipe may take no byte (0: never cut).
        self.stall_timeout = stall_timeout


class PipeRegistry:
    """All pipes of the server, by ``(project, path)``.

    Time comes from the injected ``clock``; ``watcher`` tells when a paused
    sender hangs up (the reactor cannot see it while the socket is unread).
    """

    def __init__(
        self,
        clock: IReactorTime,
        wait_timeout: float = 300.0,
        max_receivers: int = 256,
        watcher: Optional[Watcher] = None,
        limits: Optional[Limits] = None,
        observer: Optional[Observer] = None,
    ) -> None:
        self.clock = clock
        self.wait_timeout = wait_timeout
        self.limits = limits if limits is not None else Limits(max_receivers)
        self.max_receivers = self.limits.max_receivers
        self.watcher: Watcher = watcher if watcher is not None else _NoWatcher()
        self.observer: Observer = observer if observer is not None else NullObserver()
        self.pipes: Dict[Key, Pipe] = {}
        self.counts: Dict[str, int] = {}
        self.waitingTotal = 0
        self.waitingByProject: Dict[str, int] = {}
        #: Parties (waiting or transferring) by client address.
        self.partiesByClient: Dict[str, int] = {}
        self.draining = False
        #: Transfers a shutdown cut when its grace ended.
        self.cutAtShutdown = 0
        self._drained: List[Deferred[None]] = []

    def send(self, key: Key, n: int, request: PipeRequestLike, client: str = "") -> Pipe:
        pipe = self._admit(key, n, receiver=False, client=client)
        pipe.addSender(request, n, client)
        return pipe

    def receive(self, key: Key, n: int, request: PipeRequestLike, client: str = "") -> Pipe:
        pipe = self._admit(key, n, receiver=True, client=client)
        pipe.addReceiver(request, n, client)
        return pipe

    def _admit(self, key: Key, n: int, receiver: bool, client: str) -> Pipe:
        pipe = self.pipes.get(key)
        if self.draining:
            self._count("rejected: shutting down")
            raise errors.over_limit("The server is shutting down.", reason="shutting_down")
        # Also for a party that completes its pipe: it then transfers, and
        # one client must not hold unlimited transfers either.
        perClient = self.limits.max_parties_per_client
        if perClient is not None and self.partiesByClient.get(client, 0) >= perClient:
            self._count("rejected: client limit")
            raise errors.client_limit()
        # A party that completes its pipe waits for nobody: always welcome.
        if pipe is None or not pipe.completes(receiver):
            project = key[0]
            if self.waitingTotal >= self.limits.max_waiting:
                self._count("rejected: waiting limit")
                raise errors.over_limit(
                    "Too many parties are waiting on this server.", reason="waiting_limit"
                )
            perProject = self.limits.max_waiting_per_project
            if perProject is not None and self.waitingByProject.get(project, 0) >= perProject:
                self._count("rejected: project waiting limit")
                raise errors.over_limit(
                    "Too many parties are waiting in this project.",
                    reason="project_waiting_limit",
                )
        if pipe is None:
            pipe = self.pipes[key] = Pipe(self, key, n)
        return pipe

    def adjustClient(self, client: str, delta: int) -> None:
        """A party of ``client`` joined a pipe (1) or left it (-1)."""
        left = self.partiesByClient.get(client, 0) + delta
        if left > 0:
            self.partiesByClient[client] = left
        else:
            self.partiesByClient.pop(client, None)

    def adjustWaiting(self, project: str, delta: int) -> None:
        self.waitingTotal += delta
        left = self.waitingByProject.get(project, 0) + delta
        if left:
            self.waitingByProject[project] = left
        else:
            self.waitingByProject.pop(project, None)

    def established(self, pipe: Pipe) -> None:
        self._count("established")
        self.observer.transferStarted(pipe)

    def remove(self, pipe: Pipe, how: str) -> None:
        if self.pipes.get(pipe.key) is pipe:
            del self.pipes[pipe.key]
        self._count(how)
        self.observer.pipeEnded(pipe, how)
        if not self.pipes and self._drained:
            drained, self._drained = self._drained, []
            for waiter in drained:
                # Not from inside the pipe's own state change.
                self.clock.callLater(0, waiter.callback, None)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def waiting(self) -> int:
        """Parties waiting for their pipe to be established."""
        return self.waitingTotal

    def bytesHeld(self) -> int:
        """Body bytes the server holds in its own memory, over all pipes."""
        return sum(pipe.bytesHeld() for pipe in self.pipes.values())

    def shutdown(self, grace: float) -> "Deferred[None]":
        """Refuse new parties, release waiting ones now, give transfers under
        way ``grace`` seconds, then cut the rest. Fires when all are gone."""
        self.draining = True
        text = "[ERROR] The server is shutting down."
        for pipe in list(self.pipes.values()):
            pipe.release(503, text, text, "shut down")
        if not self.pipes:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._drained.append(done)

        def cut() -> None:
            for pipe in list(self.pipes.values()):
                self.cutAtShutdown += 1
                pipe.abort()

        timer = self.clock.callLater(grace, cut)
        done.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return done
