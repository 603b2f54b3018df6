"""The pipe: one sender, K receivers, a rendezvous deadline and backpressure.

This is the domain, with no HTTP and no sockets in it. A :class:`Pipe` is the
only place where the state of a transfer changes; read its methods top to
bottom to follow a transfer's life. :class:`LiveStream` is the pipe of a
``?live`` path (SPEC §12), which readers join and leave while it runs; its
methods, in the same order, are where it differs. A ``?queue`` path is a
:class:`QueueLine` of 1:1 pipes, paired in arrival order by the registry. It talks to its parties through two small
protocols, :class:`SenderParty` and :class:`ReceiverParty` (parties.py adapts
HTTP requests to them; tests use fakes), and :class:`PipeRegistry` maps
``(project, path)`` to the pipe that holds it. Time comes from the injected
clock, and an :class:`Observer` hears of each pipe's start and end.

The sender is paused (the kernel holds its bytes) while the pipe waits and
while any receiver cannot take more; it reads again once every receiver can.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Protocol, Set, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pipeserver import errors
from pipeserver.domain.interfaces import NO_PACING, Data, Limits, Outcome
from pipeserver.domain.interfaces import Pacer, ReceiverParty, SenderParty, Watcher, _NoWatcher
from pipeserver.domain.multipart import MultipartError

__all__ = [
    "Limits",
    "LiveStream",
    "Mode",
    "NullObserver",
    "Observer",
    "Outcome",
    "Pipe",
    "PipeRegistry",
    "QueueLine",
    "State",
]

log = Logger()

Key = Tuple[str, bytes]

#: How often a paused receiver of a fan-out pipe is looked at, per
#: ``--stall-timeout``: one that took no byte for that long is cut within a
#: quarter more of it.
STALL_LOOKS = 4


def display_path(path: bytes) -> str:
    return path.decode("utf-8", "replace")


#: A pipe's resumed receivers until the first: read and discarded from only.
_NOBODY: Set[ReceiverParty] = set()


class PartyMaker(Protocol):
    """Adapts what the HTTP layer hands the registry to a pipe's parties
    (``parties.HTTPParties``)."""

    def sender(self, pipe: "Pipe", request: object) -> SenderParty: ...

    def receiver(self, pipe: "Pipe", request: object) -> ReceiverParty: ...


class Observer(Protocol):
    """Told of a pipe's milestones (metrics.py has one); never per byte."""

    def transferStarted(self, pipe: "Pipe") -> None:
        """``pipe`` is established: its parties stop waiting, bytes flow."""

    def pipeEnded(self, pipe: "Pipe", how: Outcome) -> None:
        """``pipe`` left the registry; ``pipe.bytes`` is final."""

    def rejected(self, project: str, reason: str) -> None:
        """A request was answered with an error (``Rejection.reason``)."""

    def receiverEvent(self, pipe: "Pipe", receiver: Optional[ReceiverParty], event: str) -> None:
        """A receiver ``joined`` or ``left`` a live stream under way, or was
        ``cut_stalled`` (any pipe, SPEC §5)."""


class NullObserver:
    def transferStarted(self, pipe: "Pipe") -> None:
        pass

    def pipeEnded(self, pipe: "Pipe", how: Outcome) -> None:
        pass

    def rejected(self, project: str, reason: str) -> None:
        pass

    def receiverEvent(self, pipe: "Pipe", receiver: Optional[ReceiverParty], event: str) -> None:
        pass


class State(enum.Enum):
    WAITING = "waiting"
    STREAMING = "streaming"
    DONE = "done"


class Mode(enum.Enum):
    """What a path is (SPEC §12); its value is the access line's ``mode``."""

    #: One sender, exactly K receivers (SPEC §1).
    PLAIN = "plain"
    #: ``?queue``: senders and receivers paired in arrival order, 1:1 each.
    QUEUE = "queue"
    #: ``?live``: one long-lived sender, readers join and leave.
    LIVE = "live"


#: Sender Content-Types whose live joiners start at a line (SPEC §12).
_LINE_TYPES = (b"application/x-ndjson", b"application/jsonl")


def is_line_type(value: bytes) -> bool:
    """Whether a sender's Content-Type makes a live stream one of lines."""
    mime = value.partition(b";")[0].strip().lower()
    return mime.startswith(b"text/") or mime in _LINE_TYPES


class Pipe:
    """The rendezvous and transfer on one ``(project, path)``.

    Waiting: parties join until the sender and all K receivers are there, or
    the deadline (a ``callLater`` on the injected clock) releases them all.
    Streaming: body bytes go to every receiver; any paused receiver pauses
    the upload. Done: the pipe has left the registry and ignores everything.
    """

    mode = Mode.PLAIN
    #: The queue path this pipe is one transfer of (None: not a queue's).
    queue: Optional["QueueLine"] = None

    def __init__(self, registry: "PipeRegistry", key: Key, n: int) -> None:
        self.registry = registry
        self.clock = registry.clock
        self.watcher = registry.watcher
        self.key = key
        self.path = display_path(key[1])
        self.n = n
        self.state = State.WAITING
        self.sender: Optional[SenderParty] = None
        self.receivers: List[ReceiverParty] = []
        #: Sizes the sender's reads while streaming (fastpath.ReadPacer).
        self._pacer: Pacer = NO_PACING
        self.started = False
        self.bytes = 0
        self._pending: List[bytes] = []
        self._bodyEnded = False
        self._paused: Set[ReceiverParty] = set()
        #: A look at each paused receiver, to cut it if it takes no byte.
        self._stallTimers: Dict[ReceiverParty, IDelayedCall] = {}
        #: Receivers that resumed since their last look (a set once needed).
        self._resumed: Set[ReceiverParty] = _NOBODY
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

    @property
    def fanOut(self) -> bool:
        """Whether its receivers are watched for stalling (§5: n >= 2)."""
        return self.n >= 2

    def completes(self, receiver: bool) -> bool:
        """Whether one more sender (or receiver) would establish this pipe."""
        if self.state is not State.WAITING:
            return False
        if receiver:
            return self.sender is not None and len(self.receivers) == self.n - 1
        return self.sender is None and len(self.receivers) == self.n

    # ---- joining
    def addSender(
        self, request: object, n: int, client: str = "", line: bool = False
    ) -> SenderParty:
        """The sender joins (``line``: ``?live=line``, for live streams only)."""
        if self.state is not State.WAITING:
            raise errors.established(self.path)
        if self.sender is not None:
            raise errors.second_sender(self.path)
        if n != self.n:
            raise errors.n_mismatch(self.path, self.n, n)
        upload = self.sender = self.registry.parties.sender(self, request)
        self._pacer = upload.pacer(self.clock, self._receiverRoom)
        self._join(upload, client)
        upload.say(f"[INFO] Waiting for {self.n} receiver(s)...")
        if self.receivers:
            upload.say(f"[INFO] {len(self.receivers)} receiver(s) has/have been connected.")
        # A body that ended with its headers (small, or empty) needs no pause.
        self._bodyEnded = upload.bodyComplete
        if not self._maybeEstablish() and not self._bodyEnded:
            upload.setReading(False)
        self._syncWaiting()
        return upload

    def addReceiver(
        self, request: object, n: int, client: str = "", line: bool = False
    ) -> ReceiverParty:
        """A receiver joins (``line``: ``?live=line``, for live streams only)."""
        if self.state is not State.WAITING:
            raise errors.established(self.path)
        if n != self.n:
            raise errors.n_mismatch(self.path, self.n, n)
        if len(self.receivers) >= self.n:
            raise errors.receivers_full()
        download = self.registry.parties.receiver(self, request)
        self.receivers.append(download)
        self._join(download, client)
        if self.sender is not None:
            self.sender.say("[INFO] A receiver was connected.")
        self._maybeEstablish()
        self._syncWaiting()
        return download

    def _join(self, party: "SenderParty | ReceiverParty", client: str) -> None:
        """Count ``party`` against its client until it leaves the pipe."""
        party.client = client
        self.registry.adjustClient(client, 1)

    def _leave(self, party: "SenderParty | ReceiverParty") -> None:
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
        return self._flow(pending)

    def _flow(self, pending: List[bytes]) -> bool:
        """Streaming now: the bytes that came while it waited go on, then
        the body's end, or the sender is read."""
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
    def write(self, data: Data) -> None:
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
                self._pass(data)
            self._pacer.read(len(data))
        elif self.state is State.WAITING:
            # Read before the pause took hold: at most about one read.
            self._pending.append(bytes(data))

    def writeSequence(self, pieces: List[Data]) -> None:
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
            self._passSequence(pieces, size)
        self._pacer.read(size)

    def _pass(self, data: Data) -> None:
        """Body bytes (decoded) on to the receivers."""
        self.bytes += len(data)
        for download in self.receivers:
            download.write(data)

    def _passSequence(self, pieces: List[Data], size: int) -> None:
        self.bytes += size
        for download in self.receivers:
            download.writeSequence(pieces, size)

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
        self._end(Outcome.COMPLETED)

    def _fail(self, cut: bool = False) -> None:
        """The body broke: truncate every receiver and drop the sender.
        With ``cut`` (a shutdown's grace is over) receivers are aborted at
        once rather than left to drain what is buffered for them."""
        for download in list(self.receivers):
            if cut:
                download.cut()
            else:
                download.close(self.clock, Outcome.ABORTED)
        if self.sender is not None:
            self.sender.close(self.clock, Outcome.ABORTED)
        self._end(Outcome.ABORTED)

    # ---- backpressure
    def receiverPaused(self, download: ReceiverParty) -> None:
        if download in self.receivers:
            self._paused.add(download)
            if download not in self._stallTimers:
                self._watchStall(download)
            self._updateReading()

    def receiverResumed(self, download: ReceiverParty) -> None:
        self._paused.discard(download)
        # Its look at stalling stays: a fast receiver pauses and resumes
        # thousands of times a second, too often for a timer each time.
        if download in self._stallTimers:
            if self._resumed is _NOBODY:
                self._resumed = set()
            self._resumed.add(download)
        self._updateReading()

    # ---- stalled receivers (fan-out only)
    def _watchStall(
        self,
        download: ReceiverParty,
        taken: Optional[int] = None,
        since: Optional[float] = None,
        delay: Optional[float] = None,
    ) -> None:
        """Look soon whether a paused receiver of a fan-out pipe took any
        byte since it had taken ``taken`` (at ``since``; by default now):
        one that stopped reading must not hold the others back for ever. A
        lone receiver has nobody to hold back."""
        timeout = self.registry.limits.stall_timeout
        if timeout <= 0 or not self.fanOut or self.state is not State.STREAMING:
            return
        now = self.clock.seconds()
        since = now if since is None else since
        taken = download.taken() if taken is None else taken
        self._resumed.discard(download)
        if delay is None:
            # Never past the moment it would have been idle for the timeout.
            delay = max(0.0, min(timeout / STALL_LOOKS, since + timeout - now))
        self._stallTimers[download] = self.clock.callLater(
            delay, self._checkStall, download, taken, since
        )

    def _unwatchStall(self, download: ReceiverParty) -> None:
        self._resumed.discard(download)
        timer = self._stallTimers.pop(download, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _checkStall(self, download: ReceiverParty, taken: int, since: float) -> None:
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
        if not self._mayCut():
            # Nobody to protect now; look again, to cut it once there is.
            self._watchStall(download, taken, since, timeout / STALL_LOOKS)
            return
        log.info(
            "A receiver on {path} took no byte for {timeout}s and was cut",
            path=self.path,
            timeout=errors.seconds(timeout),
        )
        self._drop(download)
        download.cut()
        self.registry.observer.receiverEvent(self, download, "cut_stalled")
        self._receiverGoneMidway(
            f"[INFO] A receiver was cut: it took no bytes for {errors.seconds(timeout)} seconds."
        )

    def _mayCut(self) -> bool:
        """Whether a stalled receiver is cut now: in a fan-out pipe, always."""
        return True

    def _updateReading(self) -> None:
        if self.sender is not None and self.state is State.STREAMING:
            if not self._paused:
                self._pacer.read()
            self.sender.setReading(not self._paused)

    def _receiverRoom(self) -> int:
        """What every receiver can take at once (for the sender's reads)."""
        return min((download.room() for download in self.receivers), default=0)

    # ---- parties leaving
    def senderLost(self, upload: SenderParty) -> None:
        if upload is not self.sender:
            return
        if self.state is State.WAITING:
            self._leave(upload)
            self.sender = None
            self._pending = []
            self._bodyEnded = False
            if not self.receivers:
                self._end(Outcome.LEFT)
            self._syncWaiting()
        elif self.state is State.STREAMING:
            log.info("Sender on {path} went away mid-transfer", path=self.path)
            for download in list(self.receivers):
                download.close(self.clock, Outcome.ABORTED)
            self._end(Outcome.ABORTED)

    def receiverLost(self, download: ReceiverParty) -> None:
        if download not in self.receivers:
            return
        self._drop(download)
        if self.state is State.WAITING:
            if self.sender is None and not self.receivers:
                self._end(Outcome.LEFT)
            self._syncWaiting()
        elif self.state is State.STREAMING:
            self._receiverGoneMidway("[INFO] A receiver aborted.")

    def _drop(self, download: ReceiverParty) -> None:
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
            upload.close(self.clock, Outcome.ABORTED)
            self._end(Outcome.ABORTED)

    # ---- the deadline
    def _expire(self) -> None:
        self._deadline = None
        wait = self.registry.wait_timeout
        if self.sender is None:
            text = errors.no_sender(self.path, wait)
        else:
            text = errors.not_all_receivers(self.path, wait)
        self.release(504, text, errors.not_all_receivers(self.path, wait), Outcome.TIMED_OUT)

    def release(self, status: int, receiverText: str, senderLine: str, how: Outcome) -> None:
        """Send every waiting party away: receivers get ``status``, the
        sender its line and a connection closed before its response ends."""
        if self.state is not State.WAITING:
            return
        for download in list(self.receivers):
            download.reject(status, receiverText, how)
        if self.sender is not None:
            self.sender.say(senderLine)
            self.sender.close(self.clock, how)
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

    def _end(self, how: Outcome) -> None:
        if self.state is State.DONE:
            return
        self.state = State.DONE
        self._cancelDeadline()
        self._pacer.stop()
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
        """Body bytes this pipe holds in the server's memory."""
        return sum(map(len, self._pending)) + sum(d.held() for d in self.receivers)


class LiveStream(Pipe):
    """The pipe of a ``?live`` path (SPEC §12): one long-lived sender, and
    readers that join and leave while it runs, each from the moment it joins.

    Waiting: readers (``?live``) wait for the sender in any number, or the
    sender for a reader. Streaming: a joiner is started at once and gets the
    bytes passed on after it joined (with ``?live=line`` or a line
    Content-Type, from the next line's start); the slowest reader paces the
    sender, and with two or more a stalled one is cut (§5). When the last
    reader leaves the stream waits again: the sender is not read, and has
    ``wait_timeout`` for a reader to join. The end of the body ends every
    reader's response; a sender that fails truncates them (§5).
    """

    mode = Mode.LIVE

    def __init__(self, registry: "PipeRegistry", key: Key) -> None:
        super().__init__(registry, key, 1)
        #: Joiners start at a line's start (``?live=line``, a line type).
        self.line = False
        #: Readers that asked ``?live=line`` themselves.
        self._lineReaders: Set[ReceiverParty] = set()
        #: Joiners still skipping to the next line's start.
        self._aligning: Set[ReceiverParty] = set()
        #: The last byte passed on (a joiner after a newline starts at once).
        self._lastByte = b"\n"
        #: What readers' responses carry, once known (no Content-Length).
        self._headers: List[Tuple[bytes, bytes]] = []
        #: Whether bytes ever flowed (it is established once, for metrics).
        self._flowed = False

    @property
    def fanOut(self) -> bool:
        # Any reader may stall; it is cut only while another is attached.
        return True

    def completes(self, receiver: bool) -> bool:
        if receiver:
            return self.sender is not None
        return self.state is State.WAITING and self.sender is None and bool(self.receivers)

    # ---- joining
    def addSender(
        self, request: object, n: int, client: str = "", line: bool = False
    ) -> SenderParty:
        if self.sender is not None:
            raise errors.second_sender(self.path, errors.LIVE_SENDER_HINT)
        upload = self.sender = self.registry.parties.sender(self, request)
        self.line = line
        self._pacer = upload.pacer(self.clock, self._receiverRoom)
        self._join(upload, client)
        upload.say("[INFO] Streaming live: receivers may join at any time.")
        for count in range(1, len(self.receivers) + 1):
            upload.say(f"[INFO] A receiver joined ({count} now).")
        self._bodyEnded = upload.bodyComplete
        if not self._maybeEstablish() and not self._bodyEnded:
            upload.setReading(False)
        self._syncWaiting()
        return upload

    def addReceiver(
        self, request: object, n: int, client: str = "", line: bool = False
    ) -> ReceiverParty:
        if len(self.receivers) >= self.registry.max_receivers:
            raise errors.receivers_full(hint="")
        download = self.registry.parties.receiver(self, request)
        self.receivers.append(download)
        self._join(download, client)
        if line:
            self._lineReaders.add(download)
        if self.state is State.STREAMING:
            assert self.sender is not None
            if self.started:
                download.start(self._headers)
            self._attach(download)
            self.sender.say(f"[INFO] A receiver joined ({len(self.receivers)} now).")
        elif self.sender is not None:
            self.sender.say(f"[INFO] A receiver joined ({len(self.receivers)} now).")
            self._maybeEstablish()
        self._syncWaiting()
        return download

    def _attach(self, download: ReceiverParty) -> None:
        """``download`` gets bytes from now: from the next line's start if
        lines were asked for and the last byte passed on ended none."""
        if (self.line or download in self._lineReaders) and self._lastByte != b"\n":
            self._aligning.add(download)
        self.registry.observer.receiverEvent(self, download, "joined")

    def _maybeEstablish(self) -> bool:
        """Bytes flow once the sender and a reader are there: at first, and
        again after a time with no reader."""
        if self.sender is None or not self.receivers:
            return False
        self.state = State.STREAMING
        self._cancelDeadline()
        self._syncWaiting()
        if not self._flowed:
            self._flowed = True
            self.sender.flush()
            self.registry.established(self)
        if self.started:
            for download in self.receivers:
                download.start(self._headers)
        else:
            self._startReceivers()
        for download in list(self.receivers):
            self._attach(download)
        pending, self._pending = self._pending, []
        return self._flow(pending)

    def _startReceivers(self) -> None:
        if self.started or self.sender is None:
            return
        headers = self.sender.receiverHeaders()
        if headers is None:
            return
        # Joiners come and go: no length is true for any of them.
        self._headers = [pair for pair in headers if pair[0].lower() != b"content-length"]
        for name, value in self._headers:
            if name.lower() == b"content-type" and is_line_type(value):
                self.line = True
        self.started = True
        for download in list(self.receivers):
            download.start(self._headers)

    # ---- the body
    def _pass(self, data: Data) -> None:
        self._passSequence([data], len(data))

    def _passSequence(self, pieces: List[Data], size: int) -> None:
        self.bytes += size
        if self._aligning:
            self._passAligning(pieces, size)
        else:
            for download in self.receivers:
                download.writeSequence(pieces, size)
        for piece in reversed(pieces):
            if len(piece):
                self._lastByte = bytes(piece[-1:])
                break

    def _passAligning(self, pieces: List[Data], size: int) -> None:
        """Pass bytes on while some joiners wait for a line's start."""
        whole = b"".join(pieces)
        start = whole.find(b"\n") + 1
        for download in list(self.receivers):
            if download not in self._aligning:
                download.writeSequence(pieces, size)
            elif start:
                self._aligning.discard(download)
                if start < size:
                    download.write(whole[start:])

    def bodyEnded(self) -> None:
        if self.state is State.WAITING and self._flowed:
            # No reader now, and none will get more: the stream is over.
            self._bodyEnded = True
            self._complete()
        else:
            super().bodyEnded()

    def _complete(self) -> None:
        upload = self.sender
        assert upload is not None
        if upload.decoder is not None and not upload.decoder.done:
            self._fail()
            return
        upload.say("[INFO] Sent successfully!")
        for download in list(self.receivers):
            download.finish()
        upload.say(f"[INFO] {len(self.receivers)} receiver(s) got the end of the stream.")
        upload.finish()
        self._end(Outcome.COMPLETED)

    # ---- readers leaving
    def _mayCut(self) -> bool:
        # A lone reader holds back nobody; it is cut once another joins.
        return len(self.receivers) >= 2

    def receiverLost(self, download: ReceiverParty) -> None:
        if download not in self.receivers:
            return
        self._drop(download)
        if self.state is State.STREAMING:
            self._readerLeft()
        elif self.state is State.WAITING:
            if self.sender is None and not self.receivers:
                self._end(Outcome.LEFT)
            self._syncWaiting()

    def _drop(self, download: ReceiverParty) -> None:
        super()._drop(download)
        self._aligning.discard(download)
        self._lineReaders.discard(download)

    def _receiverGoneMidway(self, line: str) -> None:
        # A stalled reader was cut: the sender hears why, then the count.
        assert self.sender is not None
        self.sender.say(line)
        self._readerLeft()

    def _readerLeft(self) -> None:
        """A reader left a stream under way; the stream goes on, and waits
        for one if it was the last."""
        upload = self.sender
        assert upload is not None
        upload.say(f"[INFO] A receiver left ({len(self.receivers)} now).")
        self.registry.observer.receiverEvent(self, None, "left")
        if self.receivers:
            self._updateReading()
            return
        # Waiting again: the kernel holds the sender's bytes meanwhile.
        self.state = State.WAITING
        upload.setReading(False)
        self._deadline = self.clock.callLater(self.registry.wait_timeout, self._expire)
        self._syncWaiting()

    # ---- the deadline
    def _expire(self) -> None:
        self._deadline = None
        wait = self.registry.wait_timeout
        upload = self.sender
        if upload is None:
            text = errors.no_sender(self.path, wait)
            self.release(504, text, text, Outcome.TIMED_OUT)
            return
        upload.say(errors.no_receiver(self.path, wait))
        upload.close(self.clock, Outcome.TIMED_OUT)
        self._end(Outcome.TIMED_OUT)


class QueueLine:
    """The pipes of one ``?queue`` path (SPEC §12): each a 1:1 :class:`Pipe`,
    its own transfer. Those waiting hold one party each, in arrival order,
    all of one role (one of the other would have been paired with the
    oldest); those under way run side by side."""

    def __init__(self) -> None:
        self.waiting: "OrderedDict[Pipe, None]" = OrderedDict()
        self.transfers: Set[Pipe] = set()

    def add(self, pipe: Pipe) -> None:
        pipe.queue = self
        pipe.mode = Mode.QUEUE
        if pipe.state is State.WAITING:
            self.waiting[pipe] = None
        else:
            self.transfers.add(pipe)

    def partner(self, receiver: bool) -> Optional[Pipe]:
        """The pipe a new receiver (or sender) pairs with: the oldest
        waiting one, if it waits for that role."""
        for pipe in self.waiting:
            return pipe if pipe.completes(receiver) else None
        return None

    def started(self, pipe: Pipe) -> None:
        self.waiting.pop(pipe, None)
        self.transfers.add(pipe)

    def ended(self, pipe: Pipe) -> None:
        self.waiting.pop(pipe, None)
        self.transfers.discard(pipe)

    def __bool__(self) -> bool:
        return bool(self.waiting or self.transfers)

    def pipes(self) -> Iterator[Pipe]:
        yield from list(self.waiting)
        yield from list(self.transfers)

    def depth(self) -> Tuple[int, int]:
        """Senders and receivers waiting on this path."""
        senders = sum(1 for pipe in self.waiting if pipe.sender is not None)
        return senders, len(self.waiting) - senders


class PipeRegistry:
    """All pipes of the server, by ``(project, path)``.

    Time comes from the injected ``clock``; ``watcher`` tells when a paused
    sender hangs up (the reactor cannot see it while the socket is unread).
    """

    def __init__(
        self,
        clock: IReactorTime,
        parties: PartyMaker,
        wait_timeout: float = 300.0,
        max_receivers: int = 256,
        watcher: Optional[Watcher] = None,
        limits: Optional[Limits] = None,
        observer: Optional[Observer] = None,
    ) -> None:
        self.clock = clock
        #: Makes the parties of the requests it is handed (the HTTP
        #: adapters, parties.py, which the composition root hands in).
        self.parties: PartyMaker = parties
        self.wait_timeout = wait_timeout
        self.limits = limits if limits is not None else Limits(max_receivers)
        self.max_receivers = self.limits.max_receivers
        self.watcher: Watcher = watcher if watcher is not None else _NoWatcher()
        self.observer: Observer = observer if observer is not None else NullObserver()
        #: Plain pipes and live streams, one per key.
        self.pipes: Dict[Key, Pipe] = {}
        #: Queue paths, each several pipes (SPEC §12).
        self.queues: Dict[Key, QueueLine] = {}
        self.counts: Dict[str, int] = {}
        self.waitingTotal = 0
        self.waitingByProject: Dict[str, int] = {}
        #: Parties (waiting or transferring) by client address.
        self.partiesByClient: Dict[str, int] = {}
        self.draining = False
        #: Transfers a shutdown cut when its grace ended.
        self.cutAtShutdown = 0
        self._drained: List[Deferred[None]] = []

    def send(
        self,
        key: Key,
        n: int,
        request: object,
        client: str = "",
        mode: Mode = Mode.PLAIN,
        line: bool = False,
    ) -> Pipe:
        """A sender arrives; ``mode`` is what its URL asked (``?queue``,
        ``?live``), ``line`` whether ``?live=line``. Returns its pipe."""
        pipe = self._admit(key, n, receiver=False, client=client, mode=mode)
        pipe.addSender(request, n, client, line)
        return pipe

    def receive(
        self,
        key: Key,
        n: int,
        request: object,
        client: str = "",
        mode: Mode = Mode.PLAIN,
        line: bool = False,
    ) -> Pipe:
        """A receiver arrives (see :meth:`send`). Returns its pipe."""
        pipe = self._admit(key, n, receiver=True, client=client, mode=mode)
        pipe.addReceiver(request, n, client, line)
        return pipe

    def _admit(
        self, key: Key, n: int, receiver: bool, client: str, mode: Mode = Mode.PLAIN
    ) -> Pipe:
        """The pipe a party joins (made if none fits), past the limits."""
        if self.draining:
            self._count("rejected: shutting down")
            raise errors.over_limit("The server is shutting down.", reason="shutting_down")
        # Also for a party that completes its pipe: it then transfers, and
        # one client must not hold unlimited transfers either.
        perClient = self.limits.max_parties_per_client
        if perClient is not None and self.partiesByClient.get(client, 0) >= perClient:
            self._count("rejected: client limit")
            raise errors.client_limit()
        pipe, queued = self._find(key, n, receiver, mode)
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
        if queued and key not in self.queues:
            line = self.queues[key] = QueueLine()
            plain = self.pipes.pop(key, None)
            if plain is not None:
                # A plain 1:1 pipe is the queue's first transfer: the path is one now.
                line.add(plain)
        if pipe is not None:
            return pipe
        if queued:
            pipe = Pipe(self, key, 1)
            self.queues[key].add(pipe)
        elif mode is Mode.LIVE:
            pipe = self.pipes[key] = LiveStream(self, key)
        else:
            pipe = self.pipes[key] = Pipe(self, key, n)
        return pipe

    def _find(
        self, key: Key, n: int, receiver: bool, mode: Mode
    ) -> Tuple[Optional[Pipe], bool]:
        """The pipe on ``key`` a party asking ``mode`` joins (None: a new
        one), and whether the path is (or becomes) a queue; raises the 400
        of a party that fits no pipe there (SPEC §12)."""
        path = display_path(key[1])
        line = self.queues.get(key)
        if line is not None:
            # A queue path takes any party but a live one, 1:1.
            if mode is Mode.LIVE:
                raise errors.mode_conflict(path, "a queue path", "live")
            if n != 1:
                raise errors.queue_n_mismatch(path, n)
            return line.partner(receiver), True
        pipe = self.pipes.get(key)
        if pipe is None:
            return None, mode is Mode.QUEUE
        if mode is Mode.QUEUE:
            if pipe.mode is Mode.LIVE:
                raise errors.mode_conflict(path, "a live stream", "queue")
            if pipe.n != 1:
                raise errors.mode_conflict(path, f"a pipe for {pipe.n} receivers", "queue")
            return (pipe if pipe.completes(receiver) else None), True
        if pipe.mode is Mode.LIVE:
            if not receiver and mode is not Mode.LIVE and pipe.sender is None:
                raise errors.live_sender_needed(path)
            return pipe, False
        if mode is Mode.LIVE:
            shape = "a plain pipe" if pipe.n == 1 else f"a pipe for {pipe.n} receivers"
            raise errors.mode_conflict(path, shape, "live")
        return pipe, False

    def allPipes(self) -> List[Pipe]:
        """Every pipe: plain ones, live streams, and each queue's."""
        pipes = list(self.pipes.values())
        for line in self.queues.values():
            pipes.extend(line.pipes())
        return pipes

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
        if pipe.queue is not None:
            pipe.queue.started(pipe)
        self._count("established")
        self.observer.transferStarted(pipe)

    def remove(self, pipe: Pipe, how: Outcome) -> None:
        line = pipe.queue
        if line is not None:
            line.ended(pipe)
            if not line and self.queues.get(pipe.key) is line:
                del self.queues[pipe.key]
        elif self.pipes.get(pipe.key) is pipe:
            del self.pipes[pipe.key]
        self._count(how.value)
        self.observer.pipeEnded(pipe, how)
        if not self.pipes and not self.queues and self._drained:
            drained, self._drained = self._drained, []
            for waiter in drained:
                # Not from inside the pipe's own state change.
                self.clock.callLater(0, waiter.callback, None)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def waiting(self) -> int:
        """Parties waiting for their pipe to be established."""
        return self.waitingTotal

    def active(self) -> int:
        """Transfers under way: pipes whose bytes flow."""
        return sum(1 for pipe in self.allPipes() if pipe.state is State.STREAMING)

    def bytesHeld(self) -> int:
        """Body bytes the server holds in its own memory, over all pipes."""
        return sum(pipe.bytesHeld() for pipe in self.allPipes())

    def shutdown(self, grace: float) -> "Deferred[None]":
        """Refuse new parties, release waiting ones now, give transfers under
        way ``grace`` seconds, then cut the rest. Fires when all are gone."""
        self.draining = True
        text = "[ERROR] The server is shutting down."
        for pipe in self.allPipes():
            pipe.release(503, text, text, Outcome.SHUT_DOWN)
        if not self.pipes and not self.queues:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._drained.append(done)

        def cut() -> None:
            for pipe in self.allPipes():
                self.cutAtShutdown += 1
                pipe.abort()

        timer = self.clock.callLater(grace, cut)

        def stopTimer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stopTimer)
        return done
