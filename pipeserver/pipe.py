"""The pipe: one sender, K receivers, a rendezvous deadline and backpressure.

This is the domain, with no HTTP and no sockets in it. A :class:`Pipe` is the
only place where the state of a transfer changes; read its methods top to
bottom to follow a transfer's life. It talks to its parties through two small
protocols, :class:`SenderParty` and :class:`ReceiverParty` (parties.py adapts
HTTP requests to them; tests use fakes), and :class:`PipeRegistry` maps
``(project, path)`` to the pipe that holds it. Time comes from the injected
clock, and an :class:`Observer` hears of each pipe's start and end.

The sender is paused (the kernel holds its bytes) while the pipe waits and
while any receiver cannot take more; it reads again once every receiver can.
"""

from __future__ import annotations

import enum
from typing import Dict, List, Optional, Protocol, Set, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pipeserver import errors
from pipeserver.interfaces import NO_PACING, Data, Limits, Outcome
from pipeserver.interfaces import Pacer, ReceiverParty, SenderParty, Watcher, _NoWatcher
from pipeserver.multipart import MultipartError

__all__ = ["Limits", "NullObserver", "Observer", "Outcome", "Pipe", "PipeRegistry", "State"]

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


class NullObserver:
    def transferStarted(self, pipe: "Pipe") -> None:
        pass

    def pipeEnded(self, pipe: "Pipe", how: Outcome) -> None:
        pass

    def rejected(self, project: str, reason: str) -> None:
        pass


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

    def completes(self, receiver: bool) -> bool:
        """Whether one more sender (or receiver) would establish this pipe."""
        if self.state is not State.WAITING:
            return False
        if receiver:
            return self.sender is not None and len(self.receivers) == self.n - 1
        return self.sender is None and len(self.receivers) == self.n

    # ---- joining
    def addSender(self, request: object, n: int, client: str = "") -> SenderParty:
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

    def addReceiver(self, request: object, n: int, client: str = "") -> ReceiverParty:
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
                self.bytes += len(data)
                for download in self.receivers:
                    download.write(data)
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
            self.bytes += size
            for download in self.receivers:
                download.writeSequence(pieces, size)
        self._pacer.read(size)

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
        self, download: ReceiverParty, taken: Optional[int] = None, since: Optional[float] = None
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

    def send(self, key: Key, n: int, request: object, client: str = "") -> Pipe:
        pipe = self._admit(key, n, receiver=False, client=client)
        pipe.addSender(request, n, client)
        return pipe

    def receive(self, key: Key, n: int, request: object, client: str = "") -> Pipe:
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

    def remove(self, pipe: Pipe, how: Outcome) -> None:
        if self.pipes.get(pipe.key) is pipe:
            del self.pipes[pipe.key]
        self._count(how.value)
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

    def active(self) -> int:
        """Transfers under way: pipes whose bytes flow."""
        return sum(1 for pipe in self.pipes.values() if pipe.state is State.STREAMING)

    def bytesHeld(self) -> int:
        """Body bytes the server holds in its own memory, over all pipes."""
        return sum(pipe.bytesHeld() for pipe in self.pipes.values())

    def shutdown(self, grace: float) -> "Deferred[None]":
        """Refuse new parties, release waiting ones now, give transfers under
        way ``grace`` seconds, then cut the rest. Fires when all are gone."""
        self.draining = True
        text = "[ERROR] The server is shutting down."
        for pipe in list(self.pipes.values()):
            pipe.release(503, text, text, Outcome.SHUT_DOWN)
        if not self.pipes:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._drained.append(done)

        def cut() -> None:
            for pipe in list(self.pipes.values()):
                self.cutAtShutdown += 1
                pipe.abort()

        timer = self.clock.callLater(grace, cut)

        def stopTimer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stopTimer)
        return done
