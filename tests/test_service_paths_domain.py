"""Service paths (SPEC §12) in the domain alone: ``?queue`` pairing and
``?live`` joining, with the fake parties of test_pipe_domain and a Clock."""

from __future__ import annotations

from typing import List

import pytest
from twisted.internet.task import Clock

from pipeserver import errors
from pipeserver.domain.pipe import LiveStream, Mode, Outcome, Pipe, PipeRegistry, State
from test_pipe_domain import (  # noqa: F401  (fixtures)
    KEY,
    WAIT,
    FakeReceiver,
    FakeSender,
    Recorder,
    clock,
    make_registry,
    observer,
)

QUEUE = Mode.QUEUE
LIVE = Mode.LIVE


def send(registry: PipeRegistry, sender: FakeSender, mode: Mode = QUEUE, client: str = "",
         n: int = 1, line: bool = False) -> Pipe:
    return registry.send(KEY, n, sender, client, mode, line)


def receive(registry: PipeRegistry, receiver: FakeReceiver, mode: Mode = QUEUE,
            client: str = "", n: int = 1, line: bool = False) -> Pipe:
    return registry.receive(KEY, n, receiver, client, mode, line)


# ------------------------------------------------------------------ ?queue


def test_queue_pairs_in_arrival_order_each_its_own_transfer(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer)
    receivers = [FakeReceiver() for _ in range(3)]
    pipes = [receive(registry, r) for r in receivers]
    assert len(set(pipes)) == 3 and registry.waiting() == 3
    assert registry.pipes == {} and list(registry.queues) == [KEY]
    senders = [FakeSender() for _ in range(4)]
    got = [send(registry, s) for s in senders]
    # The oldest receiver with the oldest sender; the fourth sender waits.
    assert got[:3] == pipes and all(p.state is State.STREAMING for p in pipes)
    assert got[3].state is State.WAITING and registry.waiting() == 1
    assert senders[0].lines == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] 1 receiver(s) has/have been connected.",
        "[INFO] Start sending to 1 receiver(s)!",
    ]
    for index, pipe in enumerate(pipes):
        pipe.write(b"message %d" % index)
    # Finished out of order: each transfer is its own.
    for pipe in reversed(pipes):
        pipe.bodyEnded()
    assert [r.data for r in receivers] == [b"message 0", b"message 1", b"message 2"]
    assert all(r.finished for r in receivers) and all(s.finished for s in senders[:3])
    assert registry.queues[KEY].depth() == (1, 0)
    late = FakeReceiver()
    assert receive(registry, late) is got[3]
    got[3].bodyEnded()
    assert late.finished and registry.queues == {} and registry.waiting() == 0
    assert [how for _, how in observer.ended] == [Outcome.COMPLETED] * 4


def test_queue_party_without_query_lines_up_and_n_other_than_one_is_refused(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer)
    first = FakeReceiver()
    receive(registry, first)
    # A plain receiver on a queue path queues too, rather than a 400.
    second = FakeReceiver()
    receive(registry, second, Mode.PLAIN)
    assert registry.waiting() == 2
    with pytest.raises(errors.Rejection) as caught:
        receive(registry, FakeReceiver(), Mode.PLAIN, n=2)
    assert caught.value.text == (
        "[ERROR] The number of receivers should be 1 but 2.\n"
        "'/p' is a queue path: each message goes to one receiver; drop ?n."
    )
    with pytest.raises(errors.Rejection) as caught:
        send(registry, FakeSender(), LIVE)
    assert caught.value.text == (
        "[ERROR] '/p' is a queue path now: a party with ?live cannot join it.\n"
        "Use the same query on every side, or another path."
    )
    plain = FakeSender()
    send(registry, plain, Mode.PLAIN)
    assert plain.lines[-1] == "[INFO] Start sending to 1 receiver(s)!"
    assert first.headers is not None and second.headers is None


def test_a_plain_pipe_becomes_a_queue_when_a_queue_party_comes(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer)
    plain = FakeSender()
    pipe = send(registry, plain, Mode.PLAIN)
    queued = FakeSender()
    other = send(registry, queued, QUEUE)
    assert other is not pipe and registry.pipes == {} and registry.queues[KEY].depth() == (2, 0)
    receiver = FakeReceiver()
    assert receive(registry, receiver, Mode.PLAIN) is pipe  # the oldest sender first
    # A fan-out pipe cannot be one.
    registry2 = make_registry(clock, observer)
    registry2.send(KEY, 2, FakeSender())
    with pytest.raises(errors.Rejection) as caught:
        registry2.send(KEY, 1, FakeSender(), "", QUEUE)
    assert caught.value.text.startswith(
        "[ERROR] '/p' is a pipe for 2 receivers now: a party with ?queue cannot join it."
    )


def test_each_queue_party_has_its_own_deadline(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    early, late = FakeReceiver(), FakeReceiver()
    receive(registry, early)
    clock.advance(100)
    receive(registry, late)
    clock.advance(WAIT - 100)
    text = "[ERROR] No sender arrived on '/p' within 300 seconds."
    assert early.rejected == (504, text) and late.rejected is None
    sender = FakeSender()
    assert send(registry, sender).receivers == [late]
    waiting = FakeSender()
    send(registry, waiting)
    clock.advance(WAIT)
    assert waiting.lines[-1] == "[ERROR] Not all receivers arrived on '/p' within 300 seconds."
    assert waiting.closedHow is Outcome.TIMED_OUT


def test_a_receiver_dying_is_told_to_its_sender_and_nothing_is_redelivered(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer)
    sender, dies, next_one = FakeSender(), FakeReceiver(), FakeReceiver()
    pipe = receive(registry, dies)
    send(registry, sender)
    receive(registry, next_one)
    pipe.write(b"half")
    pipe.receiverLost(dies)
    assert sender.lines[-2:] == [
        "[INFO] A receiver aborted.",
        "[INFO] All receiver(s) was/were aborted halfway.",
    ]
    assert sender.closed and next_one.headers is None and next_one.data == b""


def test_queue_waiters_count_against_the_waiting_and_client_limits(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer, max_waiting=3, max_parties_per_client=2)
    receive(registry, FakeReceiver(), client="a")
    receive(registry, FakeReceiver(), client="a")
    with pytest.raises(errors.Rejection) as caught:
        receive(registry, FakeReceiver(), client="a")
    assert caught.value.reason == "client_limit"
    receive(registry, FakeReceiver(), client="b")
    with pytest.raises(errors.Rejection) as caught:
        receive(registry, FakeReceiver(), client="c")
    assert caught.value.reason == "waiting_limit" and caught.value.status == 503
    # A sender pairs at once: it waits for nobody, so it is welcome.
    send(registry, FakeSender(), client="c")
    assert registry.waiting() == 2


def test_thousands_of_queue_waiters_leave_in_any_order(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer, max_waiting=5000, max_waiting_per_project=5000)
    receivers = [FakeReceiver() for _ in range(4000)]
    pipes = [receive(registry, r, client=str(i % 7)) for i, r in enumerate(receivers)]
    for pipe, receiver in list(zip(pipes, receivers))[::2]:
        pipe.receiverLost(receiver)
    assert registry.waiting() == 2000
    sender = FakeSender()
    assert send(registry, sender) is pipes[1]
    for pipe, receiver in list(zip(pipes, receivers))[3::2]:
        pipe.receiverLost(receiver)
    pipes[1].bodyEnded()
    assert registry.queues == {} and registry.waiting() == 0 and registry.partiesByClient == {}
    assert not clock.getDelayedCalls()


def test_shutdown_releases_queue_waiters(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    receiver = FakeReceiver()
    receive(registry, receiver)
    fired: List[object] = []
    registry.shutdown(30).addCallback(fired.append)
    assert receiver.rejected == (503, "[ERROR] The server is shutting down.")
    assert fired == [None] and registry.queues == {}


# ------------------------------------------------------------------ ?live


def test_live_readers_join_from_now_and_leave(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender, first = FakeSender(), FakeReceiver()
    sender.receiverHeaders = lambda: [(b"Content-Type", b"audio/ogg")]  # type: ignore[method-assign]
    pipe = send(registry, sender, LIVE)
    assert isinstance(pipe, LiveStream) and sender.reading is False
    assert sender.lines == ["[INFO] Streaming live: receivers may join at any time."]
    receive(registry, first, Mode.PLAIN)  # any GET joins
    assert pipe.state is State.STREAMING and sender.reading is True
    pipe.write(b"one ")
    second = FakeReceiver()
    assert receive(registry, second, LIVE) is pipe
    assert second.headers == [(b"Content-Type", b"audio/ogg")]
    pipe.writeSequence([b"two ", memoryview(b"three ")])
    pipe.receiverLost(first)
    pipe.write(b"four")
    pipe.bodyEnded()
    assert first.data == b"one two three " and not first.finished
    assert second.data == b"two three four" and second.finished
    assert sender.lines == [
        "[INFO] Streaming live: receivers may join at any time.",
        "[INFO] A receiver joined (1 now).",
        "[INFO] A receiver joined (2 now).",
        "[INFO] A receiver left (1 now).",
        "[INFO] Sent successfully!",
        "[INFO] 1 receiver(s) got the end of the stream.",
    ]
    assert sender.finished and observer.ended == [(pipe, Outcome.COMPLETED)]
    assert observer.events == ["joined", "joined", "left"] and registry.pipes == {}


def test_live_readers_waiting_before_the_sender(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    readers = [FakeReceiver() for _ in range(3)]
    pipe = receive(registry, readers[0], LIVE)
    for reader in readers[1:]:
        assert receive(registry, reader, LIVE) is pipe
    assert registry.waiting() == 3
    # A plain sender is not what they wait for.
    with pytest.raises(errors.Rejection) as caught:
        send(registry, FakeSender(), Mode.PLAIN)
    assert caught.value.text == (
        "[ERROR] Receivers on '/p' wait for a live stream: send with ?live."
    )
    sender = FakeSender()
    send(registry, sender, LIVE)
    assert sender.lines == [
        "[INFO] Streaming live: receivers may join at any time.",
        "[INFO] A receiver joined (1 now).",
        "[INFO] A receiver joined (2 now).",
        "[INFO] A receiver joined (3 now).",
    ]
    assert registry.waiting() == 0 and all(r.headers is not None for r in readers)
    with pytest.raises(errors.Rejection) as caught:
        send(registry, FakeSender(), LIVE)
    assert caught.value.text == (
        "[ERROR] Another sender has been connected on '/p'.\n" + errors.LIVE_SENDER_HINT
    )


def test_live_readers_without_a_sender_time_out(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    reader = FakeReceiver()
    receive(registry, reader, LIVE)
    clock.advance(WAIT)
    assert reader.rejected == (504, "[ERROR] No sender arrived on '/p' within 300 seconds.")


def test_a_live_joiner_drops_the_bytes_before_it_joined_and_lengths(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer)
    sender = FakeSender()
    sender.receiverHeaders = lambda: [  # type: ignore[method-assign]
        (b"Content-Length", b"100"), (b"Content-Type", b"application/octet-stream")
    ]
    pipe = send(registry, sender, LIVE)
    first = FakeReceiver()
    receive(registry, first, Mode.PLAIN)
    pipe.write(b"abc")
    late = FakeReceiver()
    receive(registry, late, Mode.PLAIN)
    pipe.write(b"def")
    assert first.data == b"abcdef" and late.data == b"def"
    # Nobody gets a Content-Length: it would be true for no joiner.
    assert first.headers == late.headers == [(b"Content-Type", b"application/octet-stream")]


@pytest.mark.parametrize("how", ["sender asks", "reader asks", "content type"])
def test_a_line_joiner_starts_after_the_next_newline(
    clock: Clock, observer: Recorder, how: str
) -> None:
    registry = make_registry(clock, observer)
    sender = FakeSender()
    ctype = b"application/x-ndjson" if how == "content type" else b"application/octet-stream"
    sender.receiverHeaders = lambda: [(b"Content-Type", ctype)]  # type: ignore[method-assign]
    pipe = send(registry, sender, LIVE, line=how == "sender asks")
    first = FakeReceiver()
    receive(registry, first, Mode.PLAIN)
    pipe.write(b"line 1\nline")
    joiner = FakeReceiver()
    receive(registry, joiner, Mode.PLAIN, line=how == "reader asks")
    pipe.writeSequence([b" 2 ", memoryview(b"goes on")])
    pipe.writeSequence([b"\nline ", b"3\nline 4"])
    pipe.write(b"\n")
    # After a newline a joiner starts at once.
    at_start = FakeReceiver()
    receive(registry, at_start, Mode.PLAIN, line=how == "reader asks")
    pipe.write(b"line 5\n")
    assert first.data == b"line 1\nline 2 goes on\nline 3\nline 4\nline 5\n"
    assert joiner.data == b"line 3\nline 4\nline 5\n"
    assert at_start.data == b"line 5\n"


def test_a_plain_live_joiner_may_start_mid_line(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender = FakeSender()
    sender.receiverHeaders = lambda: [(b"Content-Type", b"video/mp4")]  # type: ignore[method-assign]
    pipe = send(registry, sender, LIVE)
    receive(registry, FakeReceiver(), Mode.PLAIN)
    pipe.write(b"ab\ncd")
    joiner = FakeReceiver()
    receive(registry, joiner, Mode.PLAIN)
    pipe.write(b"ef\ngh")
    assert joiner.data == b"ef\ngh"


def test_with_no_reader_the_live_sender_waits_then_gets_its_line(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer)
    sender, reader = FakeSender(), FakeReceiver()
    pipe = send(registry, sender, LIVE)
    receive(registry, reader, Mode.PLAIN)
    clock.advance(WAIT * 2)  # streaming: no deadline
    assert not sender.closed
    pipe.receiverLost(reader)
    assert pipe.state is State.WAITING and sender.reading is False
    assert registry.waiting() == 1
    clock.advance(WAIT - 1)
    again = FakeReceiver()
    receive(registry, again, Mode.PLAIN)  # a reader in time: the stream goes on
    assert sender.reading is True and again.headers is not None
    pipe.receiverLost(again)
    clock.advance(WAIT - 0.5)
    assert not sender.closed
    clock.advance(0.5)
    assert sender.lines[-1] == "[ERROR] No receiver on '/p' within 300 seconds."
    assert sender.closed and sender.closedHow is Outcome.TIMED_OUT
    assert observer.ended == [(pipe, Outcome.TIMED_OUT)] and registry.pipes == {}
    assert not clock.getDelayedCalls()


def test_a_live_body_that_ends_with_no_reader_ends_the_stream(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer)
    sender, reader = FakeSender(), FakeReceiver()
    pipe = send(registry, sender, LIVE)
    receive(registry, reader, Mode.PLAIN)
    pipe.receiverLost(reader)
    pipe.bodyEnded()
    assert sender.finished and sender.lines[-2:] == [
        "[INFO] Sent successfully!",
        "[INFO] 0 receiver(s) got the end of the stream.",
    ]
    assert not clock.getDelayedCalls()


def test_the_live_sender_dying_truncates_every_reader(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    sender = FakeSender()
    pipe = send(registry, sender, LIVE)
    readers = [FakeReceiver() for _ in range(3)]
    for reader in readers:
        receive(registry, reader, Mode.PLAIN)
    pipe.senderLost(sender)
    assert all(r.closed and not r.finished for r in readers)
    assert observer.ended == [(pipe, Outcome.ABORTED)]


def test_a_stuck_live_reader_is_cut_only_while_another_is_attached(
    clock: Clock, observer: Recorder
) -> None:
    registry = make_registry(clock, observer, stall_timeout=60.0)
    sender, stuck = FakeSender(), FakeReceiver()
    pipe = send(registry, sender, LIVE)
    receive(registry, stuck, Mode.PLAIN)
    pipe.receiverPaused(stuck)
    assert sender.reading is False
    clock.advance(600)
    assert not stuck.wasCut  # alone: it holds back nobody
    joiner = FakeReceiver()
    receive(registry, joiner, Mode.PLAIN)
    assert sender.reading is False  # the stuck one still paces the stream
    clock.advance(60 / 4)
    assert stuck.wasCut and sender.reading is True
    assert sender.lines[-2:] == [
        "[INFO] A receiver was cut: it took no bytes for 60 seconds.",
        "[INFO] A receiver left (1 now).",
    ]
    assert observer.events == ["joined", "joined", "cut_stalled", "left"]
    pipe.write(b"x")
    assert joiner.data == b"x"


def test_a_slow_live_reader_that_takes_bytes_is_not_cut(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer, stall_timeout=60.0)
    sender, slow, fast = FakeSender(), FakeReceiver(), FakeReceiver()
    pipe = send(registry, sender, LIVE)
    receive(registry, slow, Mode.PLAIN)
    receive(registry, fast, Mode.PLAIN)
    pipe.receiverPaused(slow)
    for _ in range(10):
        slow.takenSoFar += 1
        clock.advance(30)
    assert not slow.wasCut and sender.reading is False


def test_live_mode_conflicts(clock: Clock, observer: Recorder) -> None:
    registry = make_registry(clock, observer)
    registry.send(KEY, 1, FakeSender())
    with pytest.raises(errors.Rejection) as caught:
        receive(registry, FakeReceiver(), LIVE)
    assert caught.value.text.startswith(
        "[ERROR] '/p' is a plain pipe now: a party with ?live cannot join it."
    )
    live = make_registry(clock, observer)
    send(live, FakeSender(), LIVE)
    with pytest.raises(errors.Rejection) as caught:
        receive(live, FakeReceiver(), QUEUE)
    assert caught.value.text.startswith(
        "[ERROR] '/p' is a live stream now: a party with ?queue cannot join it."
    )


def test_live_readers_are_capped_and_counted_per_client(clock: Clock, observer: Recorder) -> None:
    registry = PipeRegistry(
        clock, wait_timeout=WAIT, max_receivers=3, observer=observer,
        parties=make_registry(clock, observer).parties,
    )
    registry.limits.max_parties_per_client = 2
    pipe = registry.send(KEY, 1, FakeSender(), "s", LIVE)
    registry.receive(KEY, 1, FakeReceiver(), "a")
    registry.receive(KEY, 1, FakeReceiver(), "a")
    with pytest.raises(errors.Rejection) as caught:
        registry.receive(KEY, 1, FakeReceiver(), "a")
    assert caught.value.status == 503 and caught.value.reason == "client_limit"
    registry.receive(KEY, 1, FakeReceiver(), "b")
    with pytest.raises(errors.Rejection) as caught:
        registry.receive(KEY, 1, FakeReceiver(), "c")
    assert caught.value.text == "[ERROR] The number of receivers has reached limits."
    pipe.receiverLost(pipe.receivers[0])
    registry.receive(KEY, 1, FakeReceiver(), "c")
    assert registry.partiesByClient == {"s": 1, "a": 1, "b": 1, "c": 1}
