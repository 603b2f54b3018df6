"""The fast path: every kernel-level trick the data path plays.

Nothing here changes what a transfer does, only how cheaply its bytes move:

* :class:`DirectWrites` (the receiver's half of the data path) sends body
  bytes straight to a plain TCP socket with one ``sendmsg`` while Twisted's
  transport holds nothing unsent, and reads the kernel's room (``TIOCOUTQ``,
  ``SO_SNDBUF``) for read sizing and stall detection;
* :class:`ReadPacer` (the sender's half) sizes each read of a sender to
  what every receiver's kernel can take and, for a bulk sender, has the
  kernel wake the reactor only once much has queued (``SO_RCVLOWAT``);
* :func:`send_buffered_now` puts a response head on the socket at once;
  :func:`reset` closes with a RST (``SO_LINGER`` 0);
* :class:`HangupWatcher` sees a paused sender, or a receiver, hang up (epoll).

Every one of them applies to a plain TCP transport only (see
:func:`direct_socket`): under TLS, or with a test's fake transport, they do
nothing and Twisted's own code path carries the bytes.
"""

from __future__ import annotations

import fcntl
import select
import socket
import struct
import termios
from typing import Any, Callable, Dict, List, Optional, Union, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from pipeserver.http import _twisted

Data = Union[bytes, memoryview]

#: What one read of a sender may bring in: ``READ_MIN`` (Twisted's own read
#: size) plus the room every receiver's kernel send buffer still has, up to
#: ``READ_MAX``. Bigger reads cut the per-read cost (see docs/BENCHMARKS.md),
#: and since the kernels can take all but ``READ_MIN`` (plus under
#: ``SIZING_STEP``) of such a read at once, the server still holds at most
#: about 64 KiB per receiver.
READ_MIN = 65536
READ_MAX = 1 << 20
#: The read size is set again once this much has been read since the last
#: time (a sender's first read is HEAD_READ).
SIZING_STEP = 16384
#: What one read of an HTTP/1.1 connection brings while no pipe sizes its
#: reads: a head (``--max-header-bytes``' default) or a few, and what comes
#: after. A waiting sender's body is not read (SPEC §2) but for what came in
#: the read that brought its head: at most this, not Twisted's 64 KiB, with
#: which 621 waiting senders of one client held 34 MB (bench/one_client.py).
HEAD_READ = 16384
#: A sender that brings at least ``BULK_BYTES`` per ``BULK_WINDOW`` seconds
#: (200 MB/s) is read only once that much has queued (SO_RCVLOWAT): at full
#: speed the reactor would otherwise wake for every ~64 KiB the client
#: wrote, and those wake-ups, not the bytes, were most of the server's CPU
#: (docs/BENCHMARKS.md). While it is on, a check every ``BULK_WINDOW`` turns
#: it off as soon as the sender falls below that rate, so bytes left short of
#: the mark (a pause, a chunked body's end) wait at most two windows.
BULK_BYTES = 1 << 20
BULK_WINDOW = 0.005
#: How many :meth:`DirectWrites.room` calls reuse one reading of SO_SNDBUF.
#: The kernel changes it rarely (autotuning grows it; memory pressure may
#: shrink it), and a stale value errs for at most this many reads.
SNDBUF_RECHECK = 32
#: The most a hang-up check peeks at to see whether a chunked body has all
#: arrived (a sender's read at its biggest, ``READ_MAX``); beyond that the
#: sender counts as gone.
PEEK_MAX = READ_MAX


# ---- sockets under transports
def direct_socket(transport: object) -> Optional[socket.socket]:
    """The socket under a plain TCP transport, which the fast path may use
    directly; None for anything else (TLS, tests' fakes)."""
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return None
    sock = getattr(transport, "socket", None)
    return sock if isinstance(sock, socket.socket) else None


def read_heads(transport: object) -> None:
    """Read ``transport`` (plain TCP) at most :data:`HEAD_READ` at a time,
    until a pipe's :class:`ReadPacer` sizes its reads."""
    if direct_socket(transport) is not None:
        cast(Any, transport).bufferSize = HEAD_READ


def read_freely(transport: object) -> None:
    """Back to Twisted's own read size (a connection turned to HTTP/2,
    whose flow control bounds what a stream sends)."""
    if direct_socket(transport) is not None:
        cast(Any, transport).bufferSize = READ_MIN


def buffered_bytes(transport: object) -> int:
    """Bytes a Twisted transport holds in user space, waiting for the socket."""
    buffer = getattr(transport, "dataBuffer", b"")
    offset = getattr(transport, "offset", 0)
    temp = _twisted.temp_data_len(transport)
    try:
        return max(0, len(buffer) - offset) + temp
    except TypeError:
        return 0


def send_buffered_now(transport: Any) -> None:
    """Send what a plain TCP transport holds for its socket now, rather than
    on the reactor's next turn (when it is reported writable); what the
    kernel does not take stays queued, in order. Anything else: no-op."""
    sock = direct_socket(transport)
    if (
        sock is None
        or transport.offset < len(transport.dataBuffer)
        or transport.disconnecting
        or not transport.connected
    ):
        return
    pending: List[bytes] = _twisted.temp_data(transport)
    if not pending:
        return
    data = b"".join(pending)
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        return  # the transport meets the error in its own time
    _twisted.set_temp_data(transport, data[sent:])


def reset(transport: Any) -> None:
    """Close with a RST (SO_LINGER 0), which a client reports as a failure."""
    handle = getattr(transport, "getHandle", None)
    try:
        sock = handle() if handle is not None else None
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already gone: nothing left to mistake for a clean end
    transport.abortConnection()


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
        queued: int = struct.unpack(
            "i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        )[0]
    except (OSError, ValueError):
        return 0
    return queued


def kernel_room(sock: socket.socket, size: Optional[int] = None) -> int:
    """Bytes the kernel will still take on ``sock`` without blocking (an
    estimate on the safe side: half the send buffer, which also pays for the
    kernel's overhead, less what it holds unsent or unacknowledged).
    ``size`` is the send buffer's size if known (see :func:`send_buffer`)."""
    try:
        if size is None:
            size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        queued: int = struct.unpack(
            "i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        )[0]
    except (OSError, ValueError):
        return 0
    return max(0, size // 2 - queued)


def kernel_unread(sock: socket.socket) -> Optional[int]:
    """Bytes that arrived on ``sock`` and are not read yet (None when unknown)."""
    try:
        unread: int = struct.unpack(
            "i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        )[0]
    except (OSError, ValueError):
        return None
    return unread


def peek(sock: socket.socket, size: int) -> Optional[bytes]:
    """Up to ``size`` unread bytes of ``sock``, left unread (None on error)."""
    try:
        return sock.recv(size, socket.MSG_PEEK) if size else b""
    except OSError:
        return None


def set_low_water(sock: socket.socket, size: int) -> None:
    """Have the reactor see ``sock`` readable only once ``size`` bytes (or
    its end) have arrived."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
    except OSError:
        pass  # gone, or not a socket that has one: reads stay small


# ---- the receiver's side: bytes straight to its socket
class DirectWrites:
    """The data path of a receiver (``parties.Download`` is one).

    A mixin rather than a helper object, so a body write costs the pipe one
    call, as it always did: ``request``, ``transport`` and, once its
    response has started (:meth:`startDirect`), ``_socket`` and ``_chunked``
    are the receiver's.
    """

    request: Any
    transport: Any
    _socket: Optional[socket.socket] = None
    _chunked = False
    _sndbuf = 0
    _roomCalls = 0

    def startDirect(self, chunked: bool) -> None:
        """The response head is written: from now on body bytes may go
        straight to the socket. The head goes first, now rather than on the
        reactor's next turn: the first body bytes can then go straight to
        the socket too, and a small body reaches its receiver before the
        server turns to anything else."""
        self._socket = direct_socket(self.transport)
        self._chunked = chunked
        if self._socket is not None:
            send_buffered_now(self.transport)
            # Its body goes by sendmsg too: once the head is all sent, the
            # reactor need not wake it to send nothing (an empty send).
            _twisted.stop_writing_if_done(self.transport)

    def _idleSocket(self) -> Optional[socket.socket]:
        """The socket, while the transport holds nothing unsent (else None):
        only then may bytes go to it directly without reordering."""
        sock = self._socket
        transport = self.transport
        if (
            sock is None
            # Read here without a call, as this is on every body write; the
            # name is checked, and used everywhere else, in _twisted.py.
            or transport._tempDataLen
            or transport.offset < len(transport.dataBuffer)
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

    def write(self, data: Data) -> None:
        self.writeSequence([data], len(data))

    def writeSequence(self, pieces: List[Data], size: int) -> None:
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
            or transport.disconnecting
            or not transport.connected
            or self.request.finished
        ):
            if len(pieces) == 1:
                self.request.write(bytes(pieces[0]))
            else:
                self.request.write(b"".join(pieces))
            return
        self.request.sentLength += size
        if len(pieces) > 256:  # far below IOV_MAX, framing included
            pieces = [b"".join(pieces)]
        if self._chunked:
            parts: List[Data] = [b"%x\r\n" % size, *pieces, b"\r\n"]
        else:
            parts = pieces
        try:
            sent = sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Let the transport meet the error in its own time.
            transport.writeSequence([bytes(part) for part in parts])
            return
        rest: List[bytes] = []
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            rest.append(bytes(part[sent:]) if sent or type(part) is not bytes else part)
            sent = 0
        if rest:
            transport.writeSequence(rest)

    def held(self) -> int:
        """Body bytes the server holds for this receiver in user space."""
        return buffered_bytes(self.transport)

    def taken(self) -> int:
        """Bytes of the response its client has taken so far (what was
        written less what the transport and our kernel still hold): it
        grows as long as the client reads. The kernel's share counts: a
        socket with a large send buffer becomes writable again only once
        much of it is free, so a client reading slowly may take bytes for
        seconds without the transport's buffer moving."""
        sent: int = self.request.sentLength
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


# ---- the sender's side: how much one read takes
class ReadPacer:
    """How much each read of one sender takes, and when the reactor wakes
    for it (the bulk-read heuristic, see ``BULK_BYTES``).

    ``room`` tells what every receiver's kernel can take at once; ``unread``
    how much of a counted body is still to come (None: chunked).
    """

    def __init__(
        self,
        clock: IReactorTime,
        transport: Any,
        sock: socket.socket,
        room: Callable[[], int],
        unread: Callable[[], Optional[int]],
    ) -> None:
        self.clock = clock
        self.transport = transport
        self.sock = sock
        self._room = room
        self._unread = unread
        self._unsized = 0
        self._bulk = False
        self._bulkTimer: Optional[IDelayedCall] = None
        self._windowStart = 0.0
        self._windowBytes = 0
        self._mark = 1  # the socket's SO_RCVLOWAT

    def read(self, got: int = 0) -> None:
        """Let the sender's next read be as big as every receiver can take,
        and (``got`` being what this read brought) wait for a bulk sender's
        bytes to pile up before reading them (see ``BULK_BYTES``)."""
        self._unsized += got
        if self._unsized >= SIZING_STEP:
            # Every byte read since the last look went to the receivers'
            # kernels, so their room is now at least what it was less those
            # bytes: a read errs by under SIZING_STEP, and a small message
            # costs no look at all.
            self._unsized = 0
            self.transport.bufferSize = min(READ_MAX, READ_MIN + self._room())
        self._windowBytes += got
        if self._bulk:
            self._fitMark()
        elif got:
            now = self.clock.seconds()
            if now - self._windowStart > BULK_WINDOW:
                self._windowStart, self._windowBytes = now, got
            elif self._windowBytes >= BULK_BYTES:
                self._setBulk(True)

    def _checkBulk(self) -> None:
        self._bulkTimer = None
        self._setBulk(self._windowBytes >= BULK_BYTES)

    def _setBulk(self, bulk: bool) -> None:
        """Read the sender in ``BULK_BYTES`` gulps (checked again after
        ``BULK_WINDOW``), or as its bytes come."""
        self._bulk = bulk
        if bulk:
            self._fitMark()
            self._bulkTimer = self.clock.callLater(BULK_WINDOW, self._checkBulk)
        elif self._mark != 1:
            self._mark = 1
            self.setLowWater(1)
        self._windowStart, self._windowBytes = self.clock.seconds(), 0

    def _fitMark(self) -> None:
        """A bulk read waits for ``BULK_BYTES``, or for all the rest of a
        counted body, which then needs no check to come through."""
        left = self._unread()
        mark = BULK_BYTES if left is None else max(1, min(BULK_BYTES, left))
        if mark != self._mark:
            self._mark = mark
            self.setLowWater(mark)

    def setLowWater(self, size: int) -> None:
        set_low_water(self.sock, size)

    def stop(self) -> None:
        """The transfer is over: the connection may carry another request,
        or be read to its end, so reads go back to heads' (a next PUT would
        otherwise have up to READ_MAX of its body read with its head, before
        any receiver is there, SPEC §2)."""
        if self._bulkTimer is not None:
            self._bulkTimer.cancel()
            self._bulkTimer = None
        if self._mark != 1:
            self._bulk, self._mark = False, 1
            self.setLowWater(1)
        self.transport.bufferSize = HEAD_READ


# ---- a paused sender hanging up
@implementer(IReadDescriptor)
class HangupWatcher:
    """Sees a paused sender, or a receiver, hang up.

    A transport that is not reading never notices its peer leaving, yet a
    waiting sender must free its place at once; so must a receiver, which is
    written nothing while its stream is quiet, and whose connection may not
    be read either (``parties.ConnectionDownload``). The kernel still knows: one
    epoll set, registered with the reactor as a reader, reports the peer's
    shutdown (EPOLLRDHUP) or reset for the watched sockets, and the watcher
    aborts that transport so the normal connection-lost path runs.
    A FIN that follows a whole body may be a half-close (nc -N): that sender
    is told (``senderHalfClosed``) and then watched for a reset only.
    Where epoll is missing it does nothing and the deadline still applies.
    """

    def __init__(self, reactor: IReactorFDSet) -> None:
        self._reactor = reactor
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._watched: Dict[int, Any] = {}
        # Each watched transport's fd, kept: a closed one's fileno() is -1,
        # and every receiver is watched, so unwatch must not scan them all.
        self._fds: Dict[Any, int] = {}

    def watch(self, transport: Any) -> None:
        self._watch(transport, select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR)

    def watchReset(self, transport: Any) -> None:
        """Watch for a reset only: its peer's FIN is already in."""
        self._watch(transport, select.EPOLLHUP | select.EPOLLERR)

    def _watch(self, transport: Any, mask: int) -> None:
        fileno = getattr(transport, "fileno", None)
        if self._epoll is None or fileno is None:
            return
        try:
            fd = fileno()
        except Exception:
            return
        if fd < 0:
            return
        try:
            self._epoll.register(fd, mask)
        except FileExistsError:
            self._epoll.modify(fd, mask)
        except OSError:
            return
        if not self._watched:
            self._reactor.addReader(self)
        stale = self._watched.get(fd)
        if stale is not None and stale is not transport:
            self._fds.pop(stale, None)  # closed unwatched: its fd is reused
        self._watched[fd] = transport
        self._fds[transport] = fd

    def unwatch(self, transport: Any) -> None:
        fd = self._fds.get(transport)
        if fd is not None:
            self._forget(fd)

    def _forget(self, fd: int) -> None:
        transport = self._watched.pop(fd, None)
        if transport is not None:
            self._fds.pop(transport, None)
        if self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        if not self._watched:
            self._reactor.removeReader(self)

    # IReadDescriptor
    def fileno(self) -> int:
        return self._epoll.fileno() if self._epoll is not None else -1

    def doRead(self) -> None:
        assert self._epoll is not None
        for fd, events in self._epoll.poll(0):
            transport = self._watched.get(fd)
            self._forget(fd)
            if transport is None:
                continue
            if not events & (select.EPOLLHUP | select.EPOLLERR) and self._halfClosed(transport):
                transport.protocol.senderHalfClosed()
                continue
            transport.abortConnection()

    def _halfClosed(self, transport: Any) -> bool:
        """A sender that shut its side after sending its whole body (only a
        FIN came, and the body's end is in the kernel): not gone, it still
        waits for receivers and its response."""
        check = getattr(getattr(transport, "protocol", None), "bodyInKernel", None)
        handle = getattr(transport, "getHandle", None)
        if check is None or handle is None:
            return False
        sock = handle()
        return isinstance(sock, socket.socket) and bool(check(sock))

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "HangupWatcher"
