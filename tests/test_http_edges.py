"""HTTP edges over real sockets (issue 10 items 3, 5, 7, 11, 14): requests cut
short are logged, a cut HTTP/1.0 stream ends with a reset, a sender that
half-closes is served, the request line and head are held to RFC 9112, and a
keep-alive sender's grown read size does not outlive its pipe."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from abuse_support import (
    SENDER_DONE,
    FailureLog,
    assert_received,
    assert_sent,
    body_bytes,
    chunk,
    connect,
    get_request,
    put_request,
    sha256,
)
from helpers import curl, file_has, file_sha256, sleep, wait_for

from pipeserver import pipe as pipe_module

MiB = 1 << 20


@pytest.fixture
def failures():
    with FailureLog() as log:
        yield log
    assert log.events == [], log.describe()


class AccessLog:
    """Every ``pipeserver.access`` event, while installed."""

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []

    def __call__(self, event: Dict[str, Any]) -> None:
        if event.get("log_namespace") == "pipeserver.access":
            self.events.append(event)

    def lines(self, path: str) -> List[tuple]:
        return [(e["method"], e["path"], e["status"]) for e in self.events if e["path"] == path]


@pytest.fixture
def access():
    log = AccessLog()
    globalLogPublisher.addObserver(log)
    yield log
    globalLogPublisher.removeObserver(log)


# ---------------------------------------------------------------- item 7: access lines


@pytest_twisted.inlineCallbacks
def test_receiver_killed_mid_transfer_gets_one_aborted_line(server, access, failures):
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/cut"))
    yield server.wait_receivers("/cut", 1)
    sender = yield connect(server.portnum)
    sender.send(
        b"PUT /cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"x" * 1000)
    )
    yield wait_for(lambda: b"x" * 1000 in receiver.data, what="the first chunk")
    receiver.reset()
    yield sender.wait_closed(15, "the sender to be closed")
    yield server.wait_gone("/cut")
    yield wait_for(lambda: len(access.lines("/cut")) == 2, what="two access lines")
    assert sorted(access.lines("/cut")) == [("GET", "/cut", "aborted"), ("PUT", "/cut", "aborted")]


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest_twisted.inlineCallbacks
def test_waiting_party_hanging_up_gets_one_aborted_line(server, access, failures, method):
    party = yield connect(server.portnum)
    if method == "GET":
        party.send(get_request("/hang"))
        yield server.wait_receivers("/hang", 1)
    else:
        party.send(b"PUT /hang HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        yield server.wait_sender("/hang")
    party.reset()
    yield server.wait_gone("/hang")
    yield wait_for(lambda: access.lines("/hang"), what="an access line")
    assert access.lines("/hang") == [(method, "/hang", "aborted")]


# ---------------------------------------------------------------- item 5: HTTP/1.0 cut


CURL_RECV_ERROR = 56  # "Recv failure: Connection reset by peer"


@pytest.mark.parametrize("cut", ["sender killed", "body broken"])
@pytest_twisted.inlineCallbacks
def test_http10_receiver_of_a_cut_stream_sees_a_reset(server, procs, tmp_path, cut):
    # No Content-Length from the sender and HTTP/1.0 (no chunks): only the
    # way the connection ends tells a cut stream from a whole one.
    first = b"y" * 100_000
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-0", "-o", out, server.url("/old")), name="receiver")
    yield server.wait_receivers("/old", 1)
    sender = yield connect(server.portnum)
    sender.send(
        b"PUT /old HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(first)
    )
    yield file_has(out, len(first))
    if cut == "sender killed":
        sender.reset()
    else:
        sender.send(b"zz\r\n")  # not a chunk size: the body breaks
    yield receiver.wait()
    assert receiver.exit_code == CURL_RECV_ERROR, receiver.describe()
    with open(out, "rb") as f:
        assert f.read() == first
    yield server.wait_gone("/old")


@pytest_twisted.inlineCallbacks
def test_http10_receiver_of_a_whole_stream_exits_0(server, procs, tmp_path):
    body = b"z" * 100_000
    receiver = procs.spawn(curl("-0", server.url("/old")), name="receiver")
    yield server.wait_receivers("/old", 1)
    sender = yield connect(server.portnum)
    sender.send(
        b"PUT /old HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk(body) + chunk(b"")
    )
    yield receiver.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert bytes(receiver.out) == body
    yield sender.wait_closed()
    assert_sent(sender)


# ---------------------------------------------------------------- item 3: read size


def _server_side(server, client):
    """The server's channel of the raw ``client``'s connection."""
    port = client.transport.getHost().port
    for channel in server.site.channels:
        if channel.transport.getPeer().port == port:
            return channel
    raise AssertionError("no server channel for this client")


@pytest_twisted.inlineCallbacks
def test_keep_alive_sender_after_a_fast_transfer_reads_one_small_read(server, procs, tmp_path):
    big = body_bytes(16 * MiB, seed=5)
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-o", out, server.url("/fast")), name="receiver")
    yield server.wait_receivers("/fast", 1)
    sender = yield connect(server.portnum)
    head = put_request("/fast", big, close=False)[: -len(big)]
    sender.send(head + big[: -MiB])
    channel = _server_side(server, sender)
    yield file_has(out, len(big) - MiB, timeout=30)
    # Sent while the receiver's kernel has room: the pipe reads it in big
    # reads (else this test would show nothing) ...
    sender.send(big[-MiB:-100])
    yield file_has(out, len(big) - 100, timeout=30)
    assert channel.transport.bufferSize > pipe_module.READ_MIN
    sender.send(big[-100:])
    yield wait_for(lambda: SENDER_DONE.encode() in sender.data, what="the first transfer")
    yield receiver.wait()
    assert receiver.exit_code == 0 and file_sha256(out) == sha256(big), receiver.describe()
    # ... and the end of the pipe puts the reads back to Twisted's size.
    assert channel.transport.bufferSize == pipe_module.READ_MIN
    yield server.wait_gone("/fast")

    # Its next PUT has head and whole body in the kernel at once: while it
    # waits, the server holds one small read of it at most.
    second = body_bytes(2 * MiB, seed=6)
    before = len(sender.data)
    sender.send(put_request("/slow", second, chunked=True, pieces=40))
    yield server.wait_sender("/slow")
    yield sleep(0.3)  # whatever more would be read, is read by now
    held = server.pipe("/slow").bytesHeld()
    assert held <= pipe_module.READ_MIN, held
    receiver2 = yield connect(server.portnum)
    receiver2.send(get_request("/slow"))
    yield receiver2.wait_closed(15)
    yield sender.wait_closed(15)
    assert_received(receiver2, second, chunked=True)
    sender.data = sender.data[before:]
    assert_sent(sender)
