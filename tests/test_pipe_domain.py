"""The pipe and its registry on their own: fake parties, a ``task.Clock``, no
HTTP and no sockets (pipeserver.domain.pipe is the domain; parties.py adapts HTTP
requests to the ``SenderParty``/``ReceiverParty`` protocols faked here)."""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple

import pytest
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from pipeserver import errors
from pipeserver.domain.interfaces import Data, Pacer
from pipeserver.domain.multipart import FirstPartDecoder
from pipeserver.domain.pipe import Limits, Outcome, Pipe, PipeRegistry, State

WAIT = 300.0


class FakePacer:
    def __init__(self) -> None:
        self.reads: List[int] = []
        self.stopped = False

    def read(self, got: int = 0) -> None:
        self.reads.append(got)

    def stop(self) -> None:
        self.stopped = True


class FakeRequest:
    """What an Observer reads of a party's request (``PartyRequest``)."""

    def __init__(self) -> None:
        self.startedAt = 0.0
        self.sentLength = 0


class FakeSender:
    client: Optional[str] = None
    decoder: Optional[FirstPartDecoder] = None

    def __init__(self, complete: bool = False) -> None:
        self.request = FakeRequest()
        self.lines: List[str] = []
        self.reading = True
        self.finished = False
        self.closed = False
        self.closedHow: Optional[Outcome] = None
        self.complete = complete
        self.pacing = FakePacer()

    @property
    def bodyComplete(self) -> bool:
        return self.complete

    def say(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self.finished = True

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        self.closed = True
        self.closedHow = how

    def setReading(self, reading: bool) -> None:
        self.reading = reading

    def receiverHeaders(self) -> Optional[List[Tuple[bytes, bytes]]]:
        return [(b"Content-Type", b"text/plain")]

    def pacer(self, clock: IReactorTime, room: Callable[[], int]) -> Pacer:
        return self.pacing


class FakeReceiver:
    client: Optional[str] = None

    def __init__(self) -> None:
        self.request = FakeRequest()
        self.headers: Optional[List[Tuple[bytes, bytes]]] = None
        self.data = b""
        self.finished = False
        self.closed = False
        self.wasCut = False
        self.closedHow: Optional[Outcome] = None
        self.rejected: Optional[Tuple[int, str]] = None
        self.rejectedHow: Optional[Outcome] = None
        self.takenSoFar = 0

    def start(self, headers: Iterable[Tuple[bytes, bytes]]) -> None:
        self.headers = list(headers)

    def write(self, data: Data) -> None:
        self.writeSequence([data], len(data))

    def writeSequence(self, pieces: List[Data], size: int) -> None:
        self.data += b"".join(bytes(piece) for piece in pieces)

    def finish(self) -> None:
        self.finished = True

    def close(self, clock: IReactorTime, how: Outcome) -> None:
        self.closed = True
        self.closedHow = how

    def cut(self) -> None:
        self.wasCut = True

    def reject(self, status: int, text: str, how: Outcome) -> None:
        self.rejected = (status, text)
        self.rejectedHow = how

    def taken(self) -> int:
        return self.takenSoFar

    def room(self) -> int:
        return 0

    def held(self) -> int:
        return 0


class FakeParties:
    """Hands the pipe the party given as the "request"."""

    def sender(self, pipe: Pipe, request: object) -> FakeSender:
        assert isinstance(request, FakeSender)
        return request

    def receiver(self, pipe: Pipe, request: object) -> FakeReceiver:
        assert isinstance(request, FakeReceiver)
        return request


class Recorder:
    def __init__(self) -> None:
        self.started: List[Pipe] = []
        self.ended: List[Tuple[Pipe, Outcome]] = []
        self.rejections: List[Tuple[str, str]] = []
        self.events: List[str] = []

    def transferStarted(self, pipe: Pipe) -> None:
        self.started.append(pipe)

    def pipeEnded(self, pipe: Pipe, how: Outcome) -> None:
        self.ended.append((pipe, how))

    def rejected(self, project: str, reason: str) -> None:
        self.rejections.append((project, reason))

    def receiverEvent(self, pipe: Pipe, receiver: object, event: str) -> None:
        self.events.append(event)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def observer() -> Recorder:
    return Recorder()


def make_registry(clock: Clock, observer: Recorder, **limits: object) -> PipeRegistry:
    return PipeRegistry(
        clock,
        wait_timeout=WAIT,
        limits=Limits(**limits),  # type: ignore[arg-type]  # each test names its own
        observer=observer,
        parties=FakeParties(),
    )


KEY = ("", b"/p")


def test_sender_first_then_receiver(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender, receiver = FakeSender(), FakeReceiver()
    pipe = registry.send(KEY, 1, sender, "a")
    assert pipe.state.name == "WAITING" and sender.reading is False
    assert sender.lines == ["[INFO] Waiting for 1 receiver(s)..."]
    registry.receive(KEY, 1, receiver, "b")
    assert pipe.state is State.STREAMING and sender.reading is True
    assert sender.lines[1:] == [
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 1 receiver(s)!",
    ]
    assert receiver.headers == [(b"Content-Type", b"text/plain")]
    assert observer.started == [pipe] and not clock.getDelayedCalls()
    pipe.write(b"hello ")
    pipe.writeSequence([b"wor", memoryview(b"ld")])
    pipe.bodyEnded()
    assert receiver.data == b"hello world" and receiver.finished and sender.finished
    assert sender.lines[-2:] == [
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    assert observer.ended == [(pipe, Outcome.COMPLETED)] and pipe.bytes == 11
    assert sender.pacing.stopped and registry.pipes == {} and registry.partiesByClient == {}
    assert registry.counts["completed"] == 1


def test_receiver_first_then_sender(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    receiver, sender = FakeReceiver(), FakeSender()
    pipe = registry.receive(KEY, 1, receiver, "b")
    assert receiver.headers is None and registry.waiting() == 1
    registry.send(KEY, 1, sender, "a")
    assert sender.lines == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] 1 receiver(s) has/have been connected.",
        "[INFO] Start sending to 1 receiver(s)!",
    ]
    assert pipe.state is State.STREAMING and receiver.headers is not None
    assert registry.waiting() == 0 and sender.reading is True


def test_a_body_that_came_with_the_head_completes_at_once(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    receiver, sender = FakeReceiver(), FakeSender(complete=True)
    registry.receive(KEY, 1, receiver)
    registry.send(KEY, 1, sender)
    assert receiver.finished and sender.finished
    assert observer.ended[0][1] is Outcome.COMPLETED


def test_deadline_is_exact(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    first, second = FakeReceiver(), FakeReceiver()
    pipe = registry.receive(KEY, 2, first)
    registry.receive(KEY, 2, second)
    clock.advance(WAIT - 0.1)
    assert first.rejected is None and pipe.state is State.WAITING
    clock.advance(0.1)
    text = "[ERROR] No sender arrived on '/p' within 300 seconds."
    assert first.rejected == (504, text) and second.rejected == (504, text)
    assert first.rejectedHow is second.rejectedHow is Outcome.TIMED_OUT
    assert observer.ended == [(pipe, Outcome.TIMED_OUT)] and registry.pipes == {}
    assert registry.waiting() == 0


def test_deadline_releases_a_waiting_sender(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender = FakeSender()
    registry.send(KEY, 1, sender)
    clock.advance(WAIT)
    assert sender.lines[-1] == "[ERROR] Not all receivers arrived on '/p' within 300 seconds."
    assert sender.closed and not sender.finished
    assert sender.closedHow is Outcome.TIMED_OUT
    # The path is free again at once.
    again = registry.send(KEY, 1, FakeSender())
    assert again.state is State.WAITING


def test_fan_out_goes_on_when_one_receiver_leaves(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender, stays, leaves = FakeSender(), FakeReceiver(), FakeReceiver()
    pipe = registry.send(KEY, 2, sender)
    registry.receive(KEY, 2, stays)
    registry.receive(KEY, 2, leaves)
    pipe.write(b"ab")
    pipe.receiverLost(leaves)
    assert sender.lines[-1] == "[INFO] A receiver aborted."
    pipe.write(b"cd")
    pipe.bodyEnded()
    assert stays.data == b"abcd" and leaves.data == b"ab" and not leaves.finished
    assert sender.lines[-1] == "[INFO] 1 of 2 receiver(s) received successfully."
    assert observer.ended == [(pipe, Outcome.COMPLETED)]


def test_the_last_receiver_leaving_aborts(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender, receiver = FakeSender(), FakeReceiver()
    pipe = registry.send(KEY, 1, sender)
    registry.receive(KEY, 1, receiver)
    pipe.receiverLost(receiver)
    assert sender.lines[-1] == "[INFO] All receiver(s) was/were aborted halfway."
    assert sender.closed and observer.ended == [(pipe, Outcome.ABORTED)]
    assert sender.closedHow is Outcome.ABORTED


def test_sender_lost_midway_truncates_receivers(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender, receiver = FakeSender(), FakeReceiver()
    pipe = registry.send(KEY, 1, sender)
    registry.receive(KEY, 1, receiver)
    pipe.senderLost(sender)
    assert receiver.closed and not receiver.finished
    assert receiver.closedHow is Outcome.ABORTED
    assert observer.ended == [(pipe, Outcome.ABORTED)]


def test_waiting_parties_leaving_free_the_path(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    receiver = FakeReceiver()
    pipe = registry.receive(KEY, 1, receiver, "b")
    pipe.receiverLost(receiver)
    assert observer.ended == [(pipe, Outcome.LEFT)] and registry.pipes == {}
    assert not clock.getDelayedCalls() and registry.partiesByClient == {}


def test_a_slow_receiver_pauses_the_sender(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender, fast, slow = FakeSender(), FakeReceiver(), FakeReceiver()
    pipe = registry.send(KEY, 2, sender)
    registry.receive(KEY, 2, fast)
    registry.receive(KEY, 2, slow)
    pipe.receiverPaused(slow)
    assert sender.reading is False
    pipe.receiverPaused(fast)
    pipe.receiverResumed(slow)
    assert sender.reading is False
    pipe.receiverResumed(fast)
    assert sender.reading is True
    # Reading again lets the pacer size the next read.
    assert 0 in sender.pacing.reads


def test_a_stalled_receiver_is_cut(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer, stall_timeout=60.0)
    sender, fast, stalled = FakeSender(), FakeReceiver(), FakeReceiver()
    pipe = registry.send(KEY, 2, sender)
    registry.receive(KEY, 2, fast)
    registry.receive(KEY, 2, stalled)
    pipe.receiverPaused(stalled)
    clock.advance(59.9)
    assert not stalled.wasCut
    clock.advance(0.1)
    assert stalled.wasCut and sender.reading is True
    assert sender.lines[-1] == "[INFO] A receiver was cut: it took no bytes for 60 seconds."
    pipe.bodyEnded()
    assert fast.finished and observer.ended == [(pipe, Outcome.COMPLETED)]


def test_a_slow_receiver_that_takes_bytes_is_not_cut(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer, stall_timeout=60.0)
    sender, fast, slow = FakeSender(), FakeReceiver(), FakeReceiver()
    pipe = registry.send(KEY, 2, sender)
    registry.receive(KEY, 2, fast)
    registry.receive(KEY, 2, slow)
    pipe.receiverPaused(slow)
    for _ in range(10):
        slow.takenSoFar += 1
        clock.advance(15)
    assert not slow.wasCut
    pipe.abort()
    assert observer.ended == [(pipe, Outcome.ABORTED)] and slow.wasCut and fast.wasCut
    assert not clock.getDelayedCalls()


def test_a_lone_receiver_is_never_cut(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer, stall_timeout=60.0)
    sender, receiver = FakeSender(), FakeReceiver()
    pipe = registry.send(KEY, 1, sender)
    registry.receive(KEY, 1, receiver)
    pipe.receiverPaused(receiver)
    assert not clock.getDelayedCalls()


def test_joining_rules(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    registry.send(KEY, 2, FakeSender())
    with pytest.raises(errors.Rejection) as caught:
        registry.send(KEY, 2, FakeSender())
    assert caught.value.text == (
        "[ERROR] Another sender has been connected on '/p'.\n" + errors.SECOND_SENDER_HINT
    )
    with pytest.raises(errors.Rejection) as caught:
        registry.receive(KEY, 3, FakeReceiver())
    assert caught.value.text == "[ERROR] The number of receivers should be 2 but 3.\nThe pipe on '/p' is for 2 receiver(s): use ?n=2 in your URL."
    registry.receive(KEY, 2, FakeReceiver())
    registry.receive(KEY, 2, FakeReceiver())
    with pytest.raises(errors.Rejection) as caught:
        registry.receive(KEY, 2, FakeReceiver())
    assert caught.value.text == "[ERROR] Connection on '/p' has been established already."


def test_limits_count_parties_per_client(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer, max_parties_per_client=2)
    first = registry.receive(("", b"/a"), 1, FakeReceiver(), "c")
    registry.receive(("", b"/b"), 1, FakeReceiver(), "c")
    assert registry.partiesByClient == {"c": 2}
    with pytest.raises(errors.Rejection) as caught:
        registry.receive(("", b"/c"), 1, FakeReceiver(), "c")
    assert caught.value.status == 503
    registry.receive(("", b"/c"), 1, FakeReceiver(), "other")
    first.receiverLost(first.receivers[0])
    assert registry.partiesByClient == {"c": 1, "other": 1}
    registry.receive(("", b"/d"), 1, FakeReceiver(), "c")
    assert registry.counts["rejected: client limit"] == 1


def test_waiting_limits_spare_a_party_that_completes_a_pipe(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer, max_waiting=1)
    registry.receive(KEY, 1, FakeReceiver())
    with pytest.raises(errors.Rejection):
        registry.receive(("", b"/other"), 1, FakeReceiver())
    pipe = registry.send(KEY, 1, FakeSender())
    assert pipe.state is State.STREAMING and registry.waiting() == 0


def test_shutdown_releases_waiting_parties(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    receiver = FakeReceiver()
    pipe = registry.receive(KEY, 1, receiver)
    done = registry.shutdown(30)
    assert receiver.rejected == (503, "[ERROR] The server is shutting down.")
    assert receiver.rejectedHow is Outcome.SHUT_DOWN
    assert observer.ended == [(pipe, Outcome.SHUT_DOWN)]
    fired: List[object] = []
    done.addCallback(fired.append)
    assert fired == [None]
