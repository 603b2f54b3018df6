# mypy: disable-error-code="attr-defined"
"""HTTP/2 flow control as backpressure, and faults per stream (SPEC §2,
§4, §5 and §11; issue 12 items 3 and 4).

What the server holds is measured as tests/test_integration_backpressure.py
does: ``registry.bytesHeld()`` and the write buffers of the transports (not
the process's RSS). The h2 parties are tests/h2_support.py clients on their
own connections unless a test says "one connection".
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import defer

import helpers
from h2_support import h2clients  # noqa: F401  (fixture)
from helpers import (
    CURL_PARTIAL_FILE,
    curl,
    file_has,
    gated,
    has_received,
    make_file,
    open_gate,
    reset_close,
    sleep,
    stalled_receiver,
    wait_for,
)
from pipeserver.http.fastpath import buffered_bytes

MiB = 1024 * 1024
H2C = "--http2-prior-knowledge"
#: curl 7.88 on an h2 stream reset with an error code: "HTTP/2 stream N was
#: not closed cleanly: CANCEL (err 8)" (checked against a bare h2 server:
#: 92 for INTERNAL_ERROR and CANCEL; 52/18/56 only for NO_ERROR, GOAWAY, RST).
CURL_HTTP2_STREAM = 92
#: curl on HTTP/1.1 cut short: closed before the end (18) or reset (56).
CUT_SHORT = (CURL_PARTIAL_FILE, 56)
SUCCESS = "[INFO] All receiver(s) was/were received successfully."
ABORTED = ["[INFO] A receiver aborted.", "[INFO] All receiver(s) was/were aborted halfway."]


def server_buffers(server) -> int:
    """Bytes the server's connections hold in their transports' write
    buffers, over all its channels (HTTP/1.1 and HTTP/2)."""
    return sum(
        buffered_bytes(getattr(channel, "transport", None))
        for channel in list(server.site.channels)
    )


def streaming(server, path) -> bool:
    pipe = server.pipe(path)
    return pipe is not None and pipe.state.name == "STREAMING"


@defer.inlineCallbacks
def settled(value, what: str, quiet: float = 0.5, timeout: float = 20.0):
    """Wait until ``value()`` has not changed for ``quiet`` seconds."""
    deadline = helpers.reactor.seconds() + timeout
    last, since = value(), helpers.reactor.seconds()
    while True:
        yield sleep(0.05)
        now = value()
        if now != last:
            last, since = now, helpers.reactor.seconds()
        elif helpers.reactor.seconds() - since >= quiet:
            return now
        if helpers.reactor.seconds() > deadline:
            raise AssertionError(f"{what} kept changing for {timeout}s (last {now})")


# ---------------------------------------------------------------- backpressure


@pytest_twisted.inlineCallbacks
def test_receiver_that_opens_no_window_holds_an_h2_sender(make_server, h2clients):
    window = 64 * 1024
    server = make_server("--h2-window", str(window))
    size = 32 * MiB
    data = os.urandom(size)
    # A receiver whose stream window is 16 KiB and which never gives a byte back.
    rclient = yield h2clients.h2c(server.portnum, window=16384, auto_ack=False)
    receiver = rclient.get("/bp", keep=False)
    yield server.wait_receivers("/bp", 1)
    sclient = yield h2clients.h2c(server.portnum)
    sender = sclient.put("/bp", data)
    yield wait_for(lambda: streaming(server, "/bp") and receiver.nbytes > 0, what="the pipe to stream")
    yield wait_for(lambda: sender.blocked, what="the sender's window to shut")
    sent = yield settled(lambda: sender.sent, "what the sender sent")
    assert sender.blocked, sender.describe()
    print(f"window-shut receiver: the h2 sender sent {sent} bytes, the receiver got "
          f"{receiver.nbytes}, the server holds {server.registry.bytesHeld()}")
    # The receiver got what its window allows, no more.
    assert receiver.nbytes <= 16384, receiver.describe()
    # The sender got the server's window and what the server passed on or
    # holds: about a window and a read, nowhere near the body.
    assert sent <= window + 16384 + 256 * 1024, sent
    assert server.registry.bytesHeld() < 1 * MiB, server.registry.bytesHeld()
    assert server_buffers(server) < 1 * MiB, server_buffers(server)
    yield sleep(0.5)
    assert sender.sent == sent, "the server opened the sender's window with the receiver shut"
    # The receiver takes bytes again: everything arrives.
    rclient.ack()
    yield receiver.wait(timeout=120)
    yield sender.wait(timeout=30)
    assert receiver.ended and receiver.nbytes == size, receiver.describe()
    assert receiver.sha256 == helpers.sha256(data)
    assert sender.lines()[-1] == SUCCESS, sender.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_stalled_http11_receiver_holds_an_h2_sender(server, h2clients):
    sock = stalled_receiver("127.0.0.1", server.portnum, "/bp")
    try:
        yield server.wait_receivers("/bp", 1)
        client = yield h2clients.h2c(server.portnum)
        sender = client.put("/bp", os.urandom(64 * MiB), keep=True)
        yield wait_for(lambda: streaming(server, "/bp"), what="the pipe to stream")
        yield wait_for(lambda: sender.blocked, what="the sender's window to shut")
        sent = yield settled(lambda: sender.sent, "what the sender sent")
        assert sender.blocked, sender.describe()
        # The kernel's socket buffers hold a few MiB; the rest waits in the sender.
        assert sent < 32 * MiB, sent
        assert server.registry.bytesHeld() < 1 * MiB
        assert server_buffers(server) < 1 * MiB
    finally:
        reset_close(sock)
    yield sender.wait()
    assert sender.lines()[-2:] == ABORTED, sender.describe()
    assert sender.reset is not None and not sender.ended, sender.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_rate_limited_h2_receiver_paces_an_h2_sender(make_server, procs, tmp_path, h2clients):
    server = make_server("--h2-window", "65536")
    size = 24 * MiB
    data = os.urandom(size)
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl(H2C, "--limit-rate", "3M", "-o", out, server.url("/slow")),
                           name="slow h2 receiver")
    yield server.wait_receivers("/slow", 1)
    client = yield h2clients.h2c(server.portnum)
    sender = client.put("/slow", data)

    def got() -> int:
        try:
            return os.path.getsize(out)
        except FileNotFoundError:
            return 0

    lead = held = 0
    while not receiver.finished:
        lead = max(lead, sender.sent - got())
        held = max(held, server.registry.bytesHeld())
        if got() < 8 * MiB:
            assert not sender.finished, "the sender was not held back"
        yield sleep(0.05)
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert helpers.file_sha256(out) == helpers.sha256(data)
    assert sender.lines()[-1] == SUCCESS
    # Ahead of the receiver by the buffers between (kernel, window), not the body.
    print(f"rate-limited h2 receiver: sender's lead at most {lead} bytes, held at most {held}")
    assert lead < 12 * MiB, lead
    assert held < 1 * MiB, held
    yield server.wait_empty()


# ---------------------------------------------------------------- faults


@pytest_twisted.inlineCallbacks
def test_sender_reset_mid_body_resets_the_receivers(server, procs, h2clients):
    part = os.urandom(200_000)
    url = server.url("/p?n=3")
    h1 = procs.spawn(curl("--http1.1", url), name="http/1.1 receiver", keep=False)
    h2curl = procs.spawn(curl(H2C, url), name="h2c curl receiver", keep=False)
    rclient = yield h2clients.h2c(server.portnum)
    receiver = rclient.get("/p?n=3")
    yield server.wait_receivers("/p", 3)
    sclient = yield h2clients.h2c(server.portnum)
    sender = sclient.put("/p?n=3", part, end=False)
    yield has_received(h1, len(part))
    yield has_received(h2curl, len(part))
    yield receiver.wait_bytes(len(part))
    sender.reset_stream()
    yield receiver.wait()
    assert receiver.reset is not None and not receiver.ended, receiver.describe()
    assert bytes(receiver.body) == part
    yield h1.wait()
    yield h2curl.wait()
    assert h1.exit_code in CUT_SHORT, h1.describe()
    assert h2curl.exit_code == CURL_HTTP2_STREAM, h2curl.describe()
    yield server.wait_empty()
    # The connections carry on: a new pipe on the same path.
    again = rclient.get("/p")
    yield server.wait_receivers("/p", 1)
    sender = sclient.put("/p", b"again")
    yield again.wait()
    yield sender.wait()
    assert again.body == b"again" and again.ended
    assert sender.lines()[-1] == SUCCESS


@pytest_twisted.inlineCallbacks
def test_one_receiver_resets_the_other_goes_on(server, h2clients):
    first, rest = os.urandom(150_000), os.urandom(250_000)
    c1 = yield h2clients.h2c(server.portnum)
    c2 = yield h2clients.h2c(server.portnum)
    r1, r2 = c1.get("/p?n=2"), c2.get("/p?n=2")
    yield server.wait_receivers("/p", 2)
    sc = yield h2clients.h2c(server.portnum)
    sender = sc.put("/p?n=2", first, end=False)
    yield r1.wait_bytes(len(first))
    yield r2.wait_bytes(len(first))
    r1.reset_stream()
    yield wait_for(lambda: "[INFO] A receiver aborted." in sender.lines(), what="the abort line")
    sender.send(rest)
    sender.end()
    yield r2.wait()
    yield sender.wait()
    assert r2.ended and r2.body == first + rest, r2.describe()
    assert (sender.status, sender.ended, sender.reset) == (200, True, None), sender.describe()
    assert sender.lines()[-3:] == [
        "[INFO] A receiver aborted.",
        "[INFO] Sent successfully!",
        "[INFO] 1 of 2 receiver(s) received successfully.",
    ], sender.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_a_stream_reset_leaves_the_other_streams_of_its_connection(server, h2clients):
    """Receivers of /a and /b on one connection, their senders on another:
    /a's receiver resets; /b goes on, on both connections."""
    a1, b1, b2 = os.urandom(100_000), os.urandom(100_000), os.urandom(300_000)
    receivers = yield h2clients.h2c(server.portnum)
    ra, rb = receivers.get("/a"), receivers.get("/b")
    yield server.wait_receivers("/a", 1)
    yield server.wait_receivers("/b", 1)
    senders = yield h2clients.h2c(server.portnum)
    sa = senders.put("/a", a1, end=False)
    sb = senders.put("/b", b1, end=False)
    yield ra.wait_bytes(len(a1))
    yield rb.wait_bytes(len(b1))
    ra.reset_stream()
    yield sa.wait()
    assert sa.lines()[-2:] == ABORTED, sa.describe()
    # The sender's response does not end cleanly: its stream is reset.
    assert sa.reset is not None and not sa.ended, sa.describe()
    sb.send(b2)
    sb.end()
    yield rb.wait()
    yield sb.wait()
    assert rb.ended and rb.body == b1 + b2, rb.describe()
    assert sb.ended and sb.lines()[-1] == SUCCESS, sb.describe()
    assert not receivers.is_closed and not senders.is_closed
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_closing_a_connection_ends_all_its_streams(server, procs, h2clients):
    part = os.urandom(100_000)
    conn = yield h2clients.h2c(server.portnum)
    # 1: it sends to an HTTP/1.1 receiver; 2: it waits; 3: it receives.
    r1 = procs.spawn(curl("--http1.1", server.url("/c1")), name="c1 receiver", keep=False)
    yield server.wait_receivers("/c1", 1)
    s1 = conn.put("/c1", part, end=False)
    conn.get("/c2")
    r3 = conn.get("/c3")
    yield server.wait_receivers("/c2", 1)
    yield server.wait_receivers("/c3", 1)
    other = yield h2clients.h2c(server.portnum)
    s3 = other.put("/c3", part, end=False)
    yield has_received(r1, len(part))
    yield r3.wait_bytes(len(part))
    conn.abort()
    yield r1.wait()
    assert r1.exit_code in CUT_SHORT, r1.describe()
    yield s3.wait()
    assert s3.lines()[-2:] == ABORTED, s3.describe()
    assert s3.reset is not None and not s3.ended, s3.describe()
    yield server.wait_empty()
    assert not other.is_closed
    assert not server.registry.partiesByClient
    assert s1 is not None


@pytest.mark.parametrize("length", [False, True], ids=["chunked", "content-length"])
@pytest_twisted.inlineCallbacks
def test_receiver_truncated_by_a_failed_sender_gets_rst_stream(server, procs, tmp_path, h2clients, length):
    first, rest = str(tmp_path / "first"), str(tmp_path / "rest")
    make_file(first, 300_000, seed=1)
    make_file(rest, 200_000, seed=2)
    with open(first, "rb") as f:
        head = f.read()
    url = server.url("/t?n=2")
    h2curl = procs.spawn(curl(H2C, url), name="h2c curl receiver", keep=False)
    client = yield h2clients.h2c(server.portnum)
    receiver = client.get("/t?n=2")
    yield server.wait_receivers("/t", 2)
    extra = ["-H", "Transfer-Encoding:", "-H", "Content-Length: 500000"] if length else []
    gen, sender = procs.pipeline(gated(first, str(tmp_path / "gate"), rest),
                                 curl("--http1.1", "-T", "-", *extra, url))
    yield has_received(h2curl, 300_000)
    yield receiver.wait_bytes(300_000)
    sender.kill()
    yield receiver.wait()
    assert receiver.reset is not None and not receiver.ended, receiver.describe()
    assert receiver.body == head
    if length:
        assert receiver.one("content-length") == "500000"
    yield h2curl.wait()
    assert h2curl.exit_code == CURL_HTTP2_STREAM, h2curl.describe()
    yield server.wait_empty()
    gen.kill()
    yield gen.wait()


@pytest_twisted.inlineCallbacks
def test_an_h2_receiver_with_its_window_shut_is_cut_as_stalled(make_server, h2clients):
    """n=2, --stall-timeout 1: an h2 receiver that never opens its window
    is cut (RST_STREAM), the other, on the same connection as the sender,
    gets every byte."""
    server = make_server("--stall-timeout", "1")
    size = 12 * MiB
    data = os.urandom(size)
    shut = yield h2clients.h2c(server.portnum, window=16384, auto_ack=False)
    stalled = shut.get("/fan?n=2", keep=False)
    conn = yield h2clients.h2c(server.portnum)
    good = conn.get("/fan?n=2", keep=False)
    yield server.wait_receivers("/fan", 2)
    sender = conn.put("/fan?n=2", data)
    yield stalled.wait(timeout=30)
    assert stalled.reset is not None and not stalled.ended, stalled.describe()
    assert stalled.nbytes <= 16384
    yield good.wait(timeout=60)
    yield sender.wait(timeout=30)
    assert good.ended and good.sha256 == helpers.sha256(data), good.describe()
    assert sender.lines() == [
        "[INFO] Waiting for 2 receiver(s)...",
        "[INFO] 2 receiver(s) has/have been connected.",
        "[INFO] Start sending to 2 receiver(s)!",
        "[INFO] A receiver was cut: it took no bytes for 1 seconds.",
        "[INFO] Sent successfully!",
        "[INFO] 1 of 2 receiver(s) received successfully.",
    ], sender.describe()
    assert not shut.is_closed
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_a_client_goaway_lets_its_open_streams_finish(server, h2clients):
    """GOAWAY(NO_ERROR) from a client: no new streams, but those open go on
    (RFC 9113 6.8): its waiting receiver still gets the whole body."""
    from hyperframe.frame import GoAwayFrame

    data = os.urandom(2 * MiB)
    client = yield h2clients.h2c(server.portnum)
    receiver = client.get("/bye", keep=False)
    yield server.wait_receivers("/bye", 1)
    # Raw, so that our own h2 state machine stays open to read the body.
    client.transport.write(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
    yield sleep(0.2)
    other = yield h2clients.h2c(server.portnum)
    sender = other.put("/bye", data)
    yield receiver.wait(timeout=30)
    yield sender.wait(timeout=30)
    assert receiver.ended and receiver.sha256 == helpers.sha256(data), (
        receiver.describe(), sender.describe(), other.is_closed)
    assert sender.lines()[-1] == SUCCESS, sender.describe()
    yield server.wait_empty()
