"""HTTP/2 (pipeserver/http2/connection.py) driven by hand: an ``h2`` client connection
on one side, the site on a FakeTCP transport and a MemoryReactorClock on the
other. Flow control as backpressure, truncation as RST_STREAM, the flood
budgets, the handover from PipeChannel. The same on real sockets with curl:
tests/test_h2_*.py."""

from __future__ import annotations

import hashlib
from typing import Any, List, Optional

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
from twisted.internet.task import Clock

from pipeserver import __version__
from pipeserver.http2.connection import BUDGETS, DEFAULT_WINDOW, LINGER, Budget, H2Channel

from unit_support import chunk, env, make_site, request  # noqa: F401  (fixtures)


class H2Peer:
    """An HTTP/2 client connection into the site, driven by hand."""

    def __init__(self, env: Any, window: Optional[int] = None) -> None:
        self.env = env
        self.client = env.client()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        if window is not None:
            self.h2.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self.h2.initiate_connection()
        self.events: List[h2.events.Event] = []
        self.send()
        # PipeChannel handed the connection over at the preface.
        self.client.proto = self.client.transport.protocol
        assert isinstance(self.client.proto, H2Channel)
        self.pump()

    def send(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.client.send(data)

    def pump(self) -> List[h2.events.Event]:
        """Read what the server wrote, answer (SETTINGS acks), until quiet."""
        for _ in range(10):
            data = self.client.transport.value()
            self.client.transport.clear()
            if data:
                self.events += self.h2.receive_data(data)
            out = self.h2.data_to_send()
            if not data and not out:
                break
            if out:
                self.client.send(out)
        return self.events

    def get(self, path: bytes, method: bytes = b"GET", end: bool = True) -> int:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream,
            [(b":method", method), (b":path", path), (b":scheme", b"http"),
             (b":authority", b"example.com")],
            end_stream=end,
        )
        self.send()
        self.pump()
        return stream

    def upload(self, stream: int, data: bytes, end: bool = False) -> None:
        for offset in range(0, len(data), 16384):
            self.h2.send_data(stream, data[offset:offset + 16384])
        if end:
            self.h2.end_stream(stream)
        self.send()
        self.pump()

    def body(self, stream: int) -> bytes:
        return b"".join(
            e.data for e in self.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == stream
        )

    def of(self, kind: type, stream: Optional[int] = None) -> List[Any]:
        return [
            e for e in self.events
            if isinstance(e, kind) and (stream is None or getattr(e, "stream_id", None) == stream)
        ]

    def status(self, stream: int) -> bytes:
        (response,) = self.of(h2.events.ResponseReceived, stream)
        return dict(response.headers)[b":status"]

    def ack(self, stream: int) -> None:
        """Take what arrived on ``stream``: reopen its windows."""
        for event in self.of(h2.events.DataReceived, stream):
            if event.flow_controlled_length and not getattr(event, "acked", False):
                event.acked = True
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream)
        self.send()
        self.pump()


def test_the_preface_turns_the_connection_to_http2(env: Any) -> None:
    peer = H2Peer(env)
    stream = peer.get(b"/version")
    assert peer.status(stream) == b"200"
    assert peer.body(stream) == __version__.encode() + b"\n"
    headers = dict(peer.of(h2.events.ResponseReceived, stream)[0].headers)
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"server"] == b"pipeserver"
    assert peer.of(h2.events.StreamEnded, stream)


#: h2's default stream window, which the server never shrinks (SPEC §11).
INITIAL = 65535


def test_a_waiting_sender_gets_a_window_only_once_its_receiver_comes(env: Any) -> None:
    peer = H2Peer(env)
    sender = peer.get(b"/p", method=b"PUT", end=False)
    # The default window, no more, and never less: no SETTINGS shrinks it.
    assert peer.h2.local_flow_control_window(sender) == INITIAL
    assert peer.body(sender) == b"[INFO] Waiting for 1 receiver(s)...\n"
    receiver = env.client().send(request(b"GET", b"/p"))
    peer.pump()
    assert peer.h2.local_flow_control_window(sender) == INITIAL + DEFAULT_WINDOW
    payload = bytes(range(256)) * 1024
    peer.upload(sender, payload, end=True)
    assert hashlib.sha256(receiver.response().body).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert peer.body(sender).decode().splitlines()[-1] == (
        "[INFO] All receiver(s) was/were received successfully."
    )


def test_a_sender_window_reopens_only_as_its_receiver_takes_bytes(env: Any) -> None:
    peer = H2Peer(env)
    sender = peer.get(b"/p", method=b"PUT", end=False)
    receiver = env.client().send(request(b"GET", b"/p"))
    peer.pump()
    receiver.pause()  # its socket is full
    peer.h2.send_data(sender, b"x" * 16384)
    peer.send()
    peer.pump()
    # What it sent is not given back while the receiver takes nothing.
    assert peer.h2.local_flow_control_window(sender) == INITIAL + DEFAULT_WINDOW - 16384
    receiver.resume()
    peer.pump()
    assert peer.h2.local_flow_control_window(sender) == INITIAL + DEFAULT_WINDOW
    peer.h2.end_stream(sender)
    peer.send()
    peer.pump()
    assert receiver.response().body == b"x" * 16384


def test_an_http2_receiver_with_a_shut_window_pauses_the_sender(env: Any) -> None:
    peer = H2Peer(env, window=1000)
    stream = peer.get(b"/p")
    sender = env.client().send(request(b"PUT", b"/p", chunked=True))
    sender.send(chunk(b"y" * 5000))
    peer.pump()
    assert len(peer.body(stream)) == 1000  # its window
    # The rest waits for the window: the upload is not read meanwhile.
    assert sender.reading == "paused"
    for _ in range(5):
        peer.ack(stream)
    assert peer.body(stream) == b"y" * 5000
    assert sender.reading == "producing"
    sender.send(chunk(b""))
    peer.pump()
    assert peer.of(h2.events.StreamEnded, stream)


def test_a_truncated_receiver_stream_ends_with_rst_stream(env: Any) -> None:
    peer = H2Peer(env)
    stream = peer.get(b"/p")
    sender = env.client().send(request(b"PUT", b"/p", chunked=True))
    sender.send(chunk(b"z" * 100))
    sender.disconnect()  # mid-body
    env.clock.advance(0)
    peer.pump()
    assert peer.body(stream) == b"z" * 100
    (reset,) = peer.of(h2.events.StreamReset, stream)
    assert reset.error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert not peer.of(h2.events.StreamEnded, stream)


def test_a_reset_from_the_receiver_is_that_receiver_leaving(env: Any) -> None:
    peer = H2Peer(env)
    first = peer.get(b"/p?n=2")
    second = peer.get(b"/p?n=2")
    sender = env.client().send(request(b"PUT", b"/p?n=2", chunked=True))
    sender.send(chunk(b"a" * 10))
    peer.h2.reset_stream(first, h2.errors.ErrorCodes.CANCEL)
    peer.send()
    sender.send(chunk(b"b" * 10)).send(chunk(b""))
    peer.pump()
    assert peer.body(second) == b"a" * 10 + b"b" * 10
    assert peer.of(h2.events.StreamEnded, second)
    assert sender.lines()[-1] == "[INFO] 1 of 2 receiver(s) received successfully."


def test_rapid_reset_ends_the_connection_with_goaway(env: Any) -> None:
    peer = H2Peer(env)
    burst = int(BUDGETS["reset"][0])
    for i in range(burst + 5):
        stream = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(
            stream,
            [(b":method", b"GET"), (b":path", b"/r%d" % i), (b":scheme", b"http"),
             (b":authority", b"example.com")],
            end_stream=True,
        )
        peer.h2.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        if not peer.client.transport.disconnecting:
            peer.send()
    peer.pump()
    (goaway,) = peer.of(h2.events.ConnectionTerminated)
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    # Our side is shut at once, and every party of the connection has left;
    # what the client still sends is read and dropped for a while.
    assert peer.client.transport.writeClosed
    env.clock.advance(0)
    assert env.registry.pipes == {}
    env.clock.advance(LINGER)
    assert peer.client.transport.aborted


def test_a_budget_spends_its_burst_then_refills_with_time() -> None:
    clock = Clock()
    budget = Budget(clock, 3, 2)
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    clock.advance(1.0)  # two more
    assert [budget.spend() for _ in range(3)] == [True, True, False]


def test_requests_with_a_priority_each_are_no_flood(env: Any) -> None:
    """Chromium puts a priority on every request's HEADERS."""
    peer = H2Peer(env)
    control = int(BUDGETS["control"][0])
    for _ in range(control + 20):
        stream = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(
            stream,
            [(b":method", b"GET"), (b":path", b"/version"), (b":scheme", b"http"),
             (b":authority", b"example.com")],
            end_stream=True, priority_weight=220, priority_depends_on=0,
        )
        peer.send()
        peer.pump()
    peer.pump()
    assert peer.of(h2.events.ConnectionTerminated) == []
    assert len(peer.of(h2.events.StreamEnded)) == control + 20


def test_a_ping_flood_ends_the_connection_with_goaway(env: Any) -> None:
    peer = H2Peer(env)
    for i in range(int(BUDGETS["control"][0]) + 5):
        peer.h2.ping(b"%08d" % i)
        if not peer.client.transport.disconnecting:
            peer.send()
    peer.pump()
    (goaway,) = peer.of(h2.events.ConnectionTerminated)
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    env.clock.advance(0)


def test_a_continuation_flood_ends_the_connection_at_a_bounded_size(env: Any) -> None:
    import hyperframe.frame

    peer = H2Peer(env)
    headers = hyperframe.frame.HeadersFrame(1)
    headers.data = peer.h2.encoder.encode(
        [(b":method", b"GET"), (b":path", b"/x"), (b":scheme", b"http"),
         (b":authority", b"example.com")]
    )
    peer.client.send(headers.serialize())
    sent = 0
    limit = 2 * 16384  # twice --max-header-bytes
    while not peer.client.transport.writeClosed and sent < 64 * 16384:
        more = hyperframe.frame.ContinuationFrame(1)
        more.data = b"\x00" * 16000
        peer.client.send(more.serialize())
        sent += 16000
    assert limit < sent <= limit + 16000
    peer.pump()
    (goaway,) = peer.of(h2.events.ConnectionTerminated)
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    env.clock.advance(0)


class Rejections:
    """An Observer that keeps the reasons of rejections."""

    def __init__(self) -> None:
        self.reasons: List[str] = []

    def transferStarted(self, pipe: Any) -> None:
        pass

    def pipeEnded(self, pipe: Any, how: Any) -> None:
        pass

    def rejected(self, project: str, reason: str) -> None:
        self.reasons.append(reason)


def test_floods_and_refused_streams_are_counted_by_reason(make_site: Any) -> None:
    env = make_site("--h2-max-streams", "1")
    seen = env.registry.observer = Rejections()
    peer = H2Peer(env)
    peer.get(b"/waits")  # a receiver: its stream stays open
    # A client that does not keep to the limit the server advertised.
    peer.h2.remote_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}
    )
    refused = peer.get(b"/second")
    (reset,) = peer.of(h2.events.StreamReset, refused)
    assert reset.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
    assert seen.reasons == ["h2_refused_stream"]
    for i in range(int(BUDGETS["control"][0]) + 5):
        peer.h2.ping(b"%08d" % i)
        peer.send()
    assert seen.reasons == ["h2_refused_stream", "h2_flood_control"]
    env.clock.advance(LINGER)


def test_a_finished_response_waiting_on_a_shut_window_is_reset_at_the_idle_timeout(
    env: Any,
) -> None:
    peer = H2Peer(env, window=1000)
    stream = peer.get(b"/p")
    sender = env.client().send(request(b"PUT", b"/p", body=b"q" * 5000))
    peer.pump()
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert len(peer.body(stream)) == 1000
    channel = peer.client.proto
    env.clock.advance(channel.idleTimeout - 1)
    peer.pump()
    assert peer.of(h2.events.StreamReset, stream) == []
    # The client never opens its window again: the stream is not kept.
    env.clock.advance(1)
    peer.pump()
    (reset,) = peer.of(h2.events.StreamReset, stream)
    assert reset.error_code == h2.errors.ErrorCodes.CANCEL
    assert not peer.of(h2.events.StreamEnded, stream)
    assert channel.streams == {}


def test_a_finished_response_drained_in_time_ends_cleanly(env: Any) -> None:
    peer = H2Peer(env, window=1000)
    stream = peer.get(b"/p")
    env.client().send(request(b"PUT", b"/p", body=b"q" * 5000))
    peer.pump()
    env.clock.advance(peer.client.proto.idleTimeout - 1)
    for _ in range(5):
        peer.ack(stream)
    env.clock.advance(1)
    peer.pump()
    assert peer.body(stream) == b"q" * 5000
    assert peer.of(h2.events.StreamEnded, stream)
    assert peer.of(h2.events.StreamReset, stream) == []
