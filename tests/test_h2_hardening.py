# mypy: disable-error-code="arg-type,attr-defined,var-annotated"
"""What one HTTP/2 client may do to the server (issue 22), with raw frames
on real sockets while real clients beside it complete with the right bytes.

Budgets follow the client address, not the connection; a frame longer than
our SETTINGS_MAX_FRAME_SIZE ends its connection at its header; what a
client that reads nothing makes the server hold is bounded per connection;
requests that never end, idle connections and SETTINGS never acknowledged
are timed; heads are checked as HTTP/1.1's are; no token and no raw escape
reaches the log. Memory is the server's own held bytes: its streams' queues
and its transports' write buffers (not the process's RSS).
"""

from __future__ import annotations

import os
import struct

import pytest
import pytest_twisted
from h2.errors import ErrorCodes
from hyperframe.frame import WindowUpdateFrame
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

import helpers
from h2_support import (
    continuation_frame,
    data_frame,
    frame_bytes,
    h2clients,  # noqa: F401  (fixture)
    headers_block,
    headers_frame,
    ping_frame,
    rst_frame,
)
from helpers import curl, make_file, sleep, wait_for
from pipeserver.http2 import _h2, connection as http2
from pipeserver.http.fastpath import buffered_bytes
from test_endpoints import run_service, self_signed, services  # noqa: F401  (fixture)

MiB = 1024 * 1024
SUCCESS = "[INFO] All receiver(s) was/were received successfully."
CALM = ErrorCodes.ENHANCE_YOUR_CALM


@defer.inlineCallbacks
def curl_pair(server, procs, tmp_path, path: str, size: int = 1 * MiB, *args: str):
    """A curl receiver and sender on ``path`` (HTTP/1.1 unless ``args``
    say otherwise), checked by sha256 and the sender's last line."""
    body = str(tmp_path / (path.strip("/") + ".body"))
    expected = make_file(body, size, seed=len(path))
    proto = list(args) or ["--http1.1"]
    receiver = procs.spawn(curl("-f", *proto, server.url(path)), name=f"receiver {path}", keep=False)
    sender = procs.spawn(curl("-f", *proto, "-T", body, server.url(path)), name=f"sender {path}")
    yield receiver.wait(timeout=30)
    yield sender.wait(timeout=30)
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    assert sender.exit_code == 0 and sender.lines()[-1] == SUCCESS, sender.describe()


def h2_channels(server):
    return [c for c in list(server.site.channels) if isinstance(c, http2.H2Channel)]


def held(server) -> int:
    """What the server holds for its HTTP/2 clients: its streams' queues and
    its connections' transport buffers."""
    total = 0
    for channel in h2_channels(server):
        total += sum(stream.queued for stream in channel.streams.values())
        total += buffered_bytes(channel.transport)
    return total


class Lines:
    """Every log event, formatted, while installed."""

    def __init__(self) -> None:
        self.lines = []

    def __call__(self, event) -> None:
        self.lines.append(formatEvent(event))

    def __enter__(self) -> "Lines":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc) -> None:
        globalLogPublisher.removeObserver(self)


# ---------------------------------------------------------------- budgets per client


def _resets(client) -> bytes:
    frames = []
    for k in range(40):
        sid = client.next_sid
        client.next_sid += 2
        frames += [headers_frame(sid, headers_block(client.encoder, f"/rr{sid}")), rst_frame(sid)]
    return frame_bytes(frames)


def _pings(client) -> bytes:
    client.next_sid += 1
    return frame_bytes(ping_frame(b"%08d" % (client.next_sid * 10 + k)) for k in range(10))


def _window_updates(client) -> bytes:
    # On the connection, with nothing sent on it: it moves no byte.
    return frame_bytes(WindowUpdateFrame(0, window_increment=1) for _ in range(100))


#: Each flood: a batch (three to a connection: about a third of the burst
#: of its budget), frames per batch, and the most frames one address may
#: send in all (burst + rate x the test's few seconds).
FLOODS = {
    "reset": (_resets, 40, 600),  # burst 200, 50/s
    "control": (_pings, 10, 300),  # burst 100, 20/s
    "silent": (_window_updates, 100, 2400),  # burst 1000, 200/s
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
@pytest_twisted.inlineCallbacks
def test_a_new_connection_gets_no_fresh_budget(server, procs, tmp_path, h2clients, kind):
    """A client that opens a new connection before each one's budget runs
    out (rapid reset over 199-stream connections...) is stopped all the
    same: its connections share its address's budget. Another address's
    HTTP/2 client is not touched."""
    batch, count, bound = FLOODS[kind]
    during = curl_pair(server, procs, tmp_path, "/during")
    frames = 0
    stopped = None
    for n in range(40):
        client = yield h2clients.raw(server.portnum)
        client.next_sid = 1
        for i in range(3):
            if client.ended:
                break
            client.write(batch(client))
            frames += count
            yield sleep(0.02)
        yield sleep(0.05)
        if client.goaway is not None:
            stopped = (n, client.goaway)
            break
        client.close()
    assert stopped is not None, f"{frames} frames of {kind} over 40 connections, never a GOAWAY"
    assert stopped[1][0] == CALM, stopped
    assert frames <= bound, (frames, stopped)
    yield during
    # Another client (127.0.0.2) has its own budget: its h2 transfer goes.
    other = yield h2clients.h2c(server.portnum, source="127.0.0.2")
    data = os.urandom(300_000)
    receiver = other.get("/other")
    yield server.wait_receivers("/other", 1)
    sender = other.put("/other", data)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.ended and receiver.sha256 == helpers.sha256(data), receiver.describe()
    assert sender.lines()[-1] == SUCCESS, sender.describe()


@pytest_twisted.inlineCallbacks
def test_a_pool_of_short_connections_from_one_address_is_no_flood(server, h2clients):
    """A worker loop of one-message HTTP/2 connections from one address (as
    ``while curl --http2-prior-knowledge ...``): each connection's SETTINGS,
    its ack of ours and its GOAWAY are the price of a connection, not a
    flood of control frames. 200 of them, as fast as they go, all served."""
    for n in range(200):
        client = yield h2clients.h2c(server.portnum)
        data = os.urandom(1000)
        receiver = client.get(f"/job{n}")
        sender = client.put(f"/job{n}", data)
        yield receiver.wait()
        yield sender.wait()
        assert client.goaway is None, (n, client.goaway)
        assert receiver.status == 200 and receiver.sha256 == helpers.sha256(data), (n, receiver.describe())
        client.conn.close_connection()  # a GOAWAY, as curl sends on leaving
        client.flush()
        client.close()
        yield client.wait_closed()
    yield server.wait_empty()


@pytest.mark.parametrize(
    "frames",
    ["window_update_0", "window_update_closed", "rst_closed", "empty_data_closed"],
)
@pytest_twisted.inlineCallbacks
def test_frames_that_change_nothing_spend_a_budget(server, procs, tmp_path, h2clients, frames):
    """WINDOW_UPDATE on the connection or a closed stream, RST_STREAM or
    empty DATA on a closed stream: h2 takes each without a word (or answers
    with RST_STREAM); a flood of them ends the connection, while 99 of its
    streams wait for a window (no frame walks them all)."""
    client = yield h2clients.raw(server.portnum, settings={4: 0})  # windows shut
    yield wait_for(lambda: client.counts.get("SettingsFrame", 0) >= 2, what="our SETTINGS in force")
    # 100 streams (the most) wait for their windows; the next is refused,
    # which closes it by a reset: frames on it are answered or ignored.
    for i in range(100):
        client.request(1 + 2 * i, "/version")
    closed = 201
    client.request(closed, "/version")
    yield wait_for(lambda: closed in client.resets, what="stream 201 to be refused")
    make = {
        "window_update_0": lambda: WindowUpdateFrame(0, window_increment=1),
        "window_update_closed": lambda: WindowUpdateFrame(closed, window_increment=1),
        "rst_closed": lambda: rst_frame(closed),
        "empty_data_closed": lambda: data_frame(closed),
    }[frames]
    during = curl_pair(server, procs, tmp_path, "/during")
    sent = 0
    while not client.ended and sent < 200_000:
        client.send(*[make() for _ in range(500)])
        sent += 500
        yield sleep(0.005)
    yield wait_for(lambda: client.ended, what=f"GOAWAY after {sent} frames")
    assert client.goaway is not None and client.goaway[0] == CALM, client.goaway
    assert sent <= 20_000, sent
    yield during


# ---------------------------------------------------------------- frames over our maximum


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "h2-path"])
@pytest_twisted.inlineCallbacks
def test_a_frame_over_our_max_frame_size_ends_the_connection_at_its_header(
    server, procs, tmp_path, h2clients, monkeypatch, fast
):
    """16 connections each declare a 16 MiB DATA frame and send its first
    KiB: each gets GOAWAY(FRAME_SIZE_ERROR) at once, and the server holds
    nothing of them (h2 alone would buffer 16 MiB per connection)."""
    monkeypatch.setattr(_h2, "FAST", fast and _h2.VERIFIED_HERE)
    clients = []
    for i in range(16):
        client = yield h2clients.raw(server.portnum)
        client.request(1, f"/big{i}", method="PUT", end_stream=False)
        # 2**24 - 1 bytes declared, 1 KiB of them sent.
        client.write(struct.pack(">HBBBL", 0xFFFF, 0xFF, 0x0, 0, 1) + b"x" * 1024)
        clients.append(client)
    for client in clients:
        yield wait_for(lambda: client.ended, timeout=5, what="GOAWAY at the frame header")
        assert client.goaway is not None and client.goaway[0] == ErrorCodes.FRAME_SIZE_ERROR, (
            client.goaway, client.is_closed)
    for channel in h2_channels(server):
        assert len(_h2._buffered(channel.h2.incoming_buffer)) < 64 * 1024
    yield curl_pair(server, procs, tmp_path, "/after", 1 * MiB, "--http2-prior-knowledge")
    for client in clients:
        yield client.wait_closed(10)
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_a_frame_over_our_max_frame_size_over_tls(procs, services, tmp_path, h2clients):
    key, cert = self_signed(str(tmp_path))
    svc, (tls,) = yield run_service(
        services, "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    from pipeserver.http._twisted import ALPN_SET_PER_CONNECTION

    if ALPN_SET_PER_CONNECTION:
        pytest.skip("this Twisted offers no ALPN (h2 by prior knowledge only)")
    client = yield h2clients.raw_tls(tls.getHost().port, cert)
    client.write(struct.pack(">HBBBL", 0xFFFF, 0xFF, 0xEE, 0, 1) + b"x" * 2048)
    yield wait_for(lambda: client.ended, timeout=5, what="GOAWAY at the frame header over TLS")
    assert client.goaway is not None and client.goaway[0] == ErrorCodes.FRAME_SIZE_ERROR, client.goaway
    yield client.wait_closed(10)


# ---------------------------------------------------------------- a client that reads nothing


@pytest_twisted.inlineCallbacks
def test_pages_for_a_client_that_opens_no_window_are_bounded(server, procs, tmp_path, h2clients):
    """Window 0, 100 streams of /noscript with a 3.9 KB path (HPACK makes
    each request a few bytes; each page is ~110 KB): the server holds about
    QUEUE_LIMIT for the connection, not 100 pages; the rest are refused."""
    client = yield h2clients.raw(server.portnum, settings={4: 0})
    path = "/noscript?path=/" + "a" * 3900
    for i in range(100):
        client.request(1 + 2 * i, path)
    yield wait_for(lambda: len(client.resets) + len(
        [r for r in client.responses.values() if r.status]) >= 100,
        what="every stream answered or refused")
    queued = held(server)
    print(f"window-0 client, 100 pages: {client.written} bytes sent, the server holds {queued}")
    assert queued <= http2.QUEUE_LIMIT + 200 * 1024, queued
    assert set(client.resets.values()) == {ErrorCodes.REFUSED_STREAM}, client.resets
    yield curl_pair(server, procs, tmp_path, "/beside")
    client.abort()


@pytest_twisted.inlineCallbacks
def test_an_h2_receiver_with_a_huge_window_that_reads_nothing(server, procs, tmp_path, h2clients):
    """Windows of 2**31-1, and nothing read: what the server hands its
    transport is bounded (SEND_BUFFER), not one 1 MiB read of the sender;
    once it reads, every byte arrives."""
    size = 64 * MiB
    body = str(tmp_path / "body")
    expected = make_file(body, size, seed=5)
    client = yield h2clients.h2c(server.portnum, window=2**31 - 1)
    client.conn.increment_flow_control_window(2**31 - 1 - 65535)
    client.flush()
    client.transport.pauseProducing()  # reads nothing
    receiver = client.get("/huge", keep=False)
    yield server.wait_receivers("/huge", 1)
    sender = procs.spawn(curl("-f", "--http1.1", "-T", body, server.url("/huge")), name="sender")
    yield wait_for(lambda: server.pipe("/huge") is not None and server.pipe("/huge").bytes > 0,
                   what="the pipe to stream")
    most = 0
    for _ in range(40):
        yield sleep(0.05)
        most = max(most, server.registry.bytesHeld() + held(server))
    print(f"a receiver that reads nothing with a 2**31 window: the server held at most {most}")
    assert most <= 384 * 1024, most
    client.transport.resumeProducing()
    yield receiver.wait(timeout=120)
    yield sender.wait(timeout=60)
    assert receiver.ended and receiver.sha256 == expected, receiver.describe()
    assert sender.exit_code == 0 and sender.lines()[-1] == SUCCESS, sender.describe()


# ---------------------------------------------------------------- timers


@pytest_twisted.inlineCallbacks
def test_a_request_that_never_ends_is_reset_after_the_header_timeout(make_server, procs, tmp_path, h2clients):
    """As HTTP/1.1 bounds a body that goes to no pipe (tests/test_abuse.py):
    --header-timeout, not the (longer) idle timeout. With the stream budget
    (200 a second), one client could otherwise hold 12,000 such streams
    (~49 MiB, bench/one_client.py h2-unended) for the 60 s default."""
    server = make_server("--header-timeout", "1")
    client = yield h2clients.raw(server.portnum)
    forever = client.request(1, "/version", end_stream=False)  # a GET, never ended
    client.send(data_frame(1, b"x"))
    yield sleep(0.6)
    client.send(data_frame(1, b"x"))  # a trickle does not keep it
    yield wait_for(lambda: forever.reset is not None, timeout=5, what="the stream to be reset")
    assert forever.reset == ErrorCodes.CANCEL and forever.status is None, forever.describe()
    yield curl_pair(server, procs, tmp_path, "/beside", 100_000, "--http2-prior-knowledge")
    client.abort()


@pytest_twisted.inlineCallbacks
def test_a_header_block_that_never_ends_ends_the_connection_after_the_header_timeout(
    make_server, procs, tmp_path, h2clients
):
    """A HEADERS without END_HEADERS whose CONTINUATION never comes (h2
    holds the block, up to twice --max-header-bytes) is timed as an
    HTTP/1.1 head is, even on a connection whose other stream (a waiting
    receiver) keeps its idle timer off; one whose CONTINUATION comes in
    time is served."""
    if not _h2.HOOKS:
        pytest.skip("this h2 lacks the hooks: the idle timeout bounds a header block")
    server = make_server("--header-timeout", "1")
    stalled = yield h2clients.raw(server.portnum)
    stalled.request(1, "/held")
    yield server.wait_receivers("/held", 1)
    block = headers_block(stalled.encoder, "/version", extra=[("x-pad", "p" * 8000)])
    stalled.send(headers_frame(3, block[:4000], end_headers=False))
    slow = yield h2clients.raw(server.portnum, source="127.0.0.2")
    block = headers_block(slow.encoder, "/version")
    slow.send(headers_frame(1, block[:5], end_headers=False))
    yield sleep(0.5)
    slow.send(continuation_frame(1, block[5:], end_headers=True))
    yield wait_for(lambda: stalled.ended, timeout=5, what="GOAWAY for the header block")
    assert stalled.goaway is not None and stalled.goaway[0] == CALM, stalled.goaway
    yield wait_for(lambda: slow.response(1).finished, what="the slow head's answer")
    assert slow.response(1).status == 200, slow.response(1).describe()
    assert not slow.ended
    yield stalled.wait_closed(10)
    yield server.wait_empty()
    yield curl_pair(server, procs, tmp_path, "/after", 100_000, "--http2-prior-knowledge")


@pytest_twisted.inlineCallbacks
def test_idle_timeout_applies_to_h2_connections(make_server, h2clients):
    server = make_server("--idle-timeout", "1")
    client = yield h2clients.h2c(server.portnum)
    version = client.get("/version")
    yield version.wait()
    started = helpers.reactor.seconds()
    yield client.wait_closed(8, "the idle connection to be closed")
    took = helpers.reactor.seconds() - started
    assert client.goaway is not None and client.goaway[0] == ErrorCodes.NO_ERROR, client.goaway
    assert 0.5 <= took <= 4.0, took


@pytest_twisted.inlineCallbacks
def test_settings_never_acknowledged_end_the_connection(make_server, h2clients):
    server = make_server("--header-timeout", "1")
    client = yield h2clients.raw(server.portnum, ack_settings=False)
    yield wait_for(lambda: client.ended, timeout=8, what="GOAWAY for SETTINGS never acknowledged")
    assert client.goaway is not None and client.goaway[0] == ErrorCodes.SETTINGS_TIMEOUT, client.goaway
    yield client.wait_closed(10)
    # One that acknowledges is kept.
    good = yield h2clients.raw(server.portnum)
    yield sleep(1.5)
    assert not good.ended
    good.abort()


# ---------------------------------------------------------------- waiting senders


@pytest_twisted.inlineCallbacks
def test_waiting_senders_are_bounded_per_connection_and_per_client(server, h2clients):
    """A waiting h2 sender may send the default window (64 KiB, never shrunk:
    SPEC §11). Past WAITING_PER_CONNECTION on one connection, or
    WAITING_PER_CLIENT for one address, a new one gets 503."""
    window = b"w" * 65535
    per_conn, per_client = http2.WAITING_PER_CONNECTION, http2.WAITING_PER_CLIENT
    conns = []
    senders = []
    for c in range(per_client // per_conn):
        conn = yield h2clients.h2c(server.portnum)
        conns.append(conn)
        for i in range(per_conn):
            senders.append(conn.put(f"/w{c}-{i}", window, end=False))
    yield wait_for(lambda: len(server.registry.pipes) == per_client, what="the waiting senders")
    # One more on a full connection, and on a new one of the same address.
    over_conn = conns[0].put("/over-conn", b"x", end=False)
    extra = yield h2clients.h2c(server.portnum)
    over_client = extra.put("/over-client", b"x", end=False)
    text = "[ERROR] Too many HTTP/2 senders from your address or connection are waiting for their receivers.\n"
    for refused in (over_conn, over_client):
        yield refused.wait()
        assert refused.status == 503 and refused.body == text.encode(), refused.describe()
        assert refused.one("retry-after") == "5"
    yield wait_for(lambda: all(s.sent == 65535 for s in senders), what="each window sent")
    assert server.registry.bytesHeld() <= per_client * 65535, server.registry.bytesHeld()
    # Another address waits as before.
    other = yield h2clients.h2c(server.portnum, source="127.0.0.2")
    fine = other.put("/fine", b"x", end=False)
    yield server.wait_sender("/fine")
    # The server has it; its 200 may still be on the way.
    yield wait_for(lambda: fine.status is not None, what="the answer to /fine")
    assert fine.status == 200, fine.describe()
    # One that leaves frees its place.
    senders[0].reset_stream()
    yield wait_for(lambda: "/w0-0" not in str(list(server.registry.pipes)), what="its pipe to go")
    again = conns[0].put("/again", b"x", end=False)
    yield server.wait_sender("/again")
    # The server has it; its 200 may still be on the way.
    yield wait_for(lambda: again.status is not None, what="the answer to /again")
    assert again.status == 200, again.describe()
    for conn in conns + [extra, other]:
        conn.abort()
    yield server.wait_empty()


# ---------------------------------------------------------------- heads and logs


@pytest_twisted.inlineCallbacks
def test_no_token_in_the_log_over_h2(make_server, procs, tmp_path, h2clients):
    """A token with a trailing space: h2 refuses the header (its error text
    quotes it); the log says what went wrong, never the token."""
    server = make_server()
    secret = "s3cr3t-Token-" + os.urandom(8).hex()
    with Lines() as log:
        client = yield h2clients.raw(server.portnum)
        client.request(1, "/p", extra=[("authorization", f"Bearer {secret} ")])
        yield wait_for(lambda: client.ended or client.response(1).finished, what="the refusal")
        yield sleep(0.2)
    assert not [line for line in log.lines if secret in line], [l for l in log.lines if secret in l]
    assert client.goaway is None or secret.encode() not in client.goaway[2]
    yield curl_pair(server, procs, tmp_path, "/beside", 100_000, "--http2-prior-knowledge")


@pytest.mark.parametrize("method", ["GE\x1b[31mT", "GET /x HTTP/1.1", "", "G\x00T"])
@pytest_twisted.inlineCallbacks
def test_a_bad_method_gets_400_and_no_raw_escape_is_logged(server, h2clients, method):
    with Lines() as log:
        client = yield h2clients.raw(server.portnum)
        response = client.request(1, "/version", method=method)
        yield wait_for(lambda: response.finished or client.ended, what="the answer")
        yield sleep(0.1)
    if client.goaway is None and response.reset is None:
        assert response.status == 400 and response.body == b"[ERROR] Malformed request.\n", response.describe()
    access = [line for line in log.lines if "in=" in line and "out=" in line]
    for line in log.lines:
        assert "\x1b" not in line and "\x00" not in line, line
    assert not [line for line in access if method and method in line and method != "GET /x HTTP/1.1"]
    client.abort()


@pytest_twisted.inlineCallbacks
def test_max_headers_applies_over_h2(make_server, h2clients):
    server = make_server("--max-headers", "10")
    client = yield h2clients.h2c(server.portnum)
    fine = client.get("/version", headers=[(f"x-h{i}", "v") for i in range(10)])
    over = client.get("/version", headers=[(f"x-h{i}", "v") for i in range(11)])
    yield fine.wait()
    yield over.wait()
    assert fine.status == 200, fine.describe()
    assert over.status == 431 and over.body == b"[ERROR] Request headers are too large.\n", over.describe()


@pytest.mark.parametrize("length", ["0_10", "+10", " 10", "1e1", "10, 10", "١٠"])
@pytest_twisted.inlineCallbacks
def test_a_content_length_of_other_than_digits_is_refused(server, h2clients, length):
    """On every h2 release (4.1-4.3 take ``0_10`` as 10): refused, and the
    receiver waiting on the path gets nothing."""
    receiver_conn = yield h2clients.h2c(server.portnum, source="127.0.0.2")
    receiver = receiver_conn.get("/cl")
    yield server.wait_receivers("/cl", 1)
    client = yield h2clients.raw(server.portnum)
    response = client.request(1, "/cl", method="PUT", end_stream=False,
                              extra=[("content-length", length)])
    client.send(data_frame(1, b"0123456789", end_stream=True))
    yield wait_for(lambda: response.finished or client.ended, what="the refusal")
    if not client.ended:
        assert response.status == 400 and response.body == b"[ERROR] Malformed request.\n", response.describe()
    else:
        assert client.goaway[0] == ErrorCodes.PROTOCOL_ERROR, client.goaway
    yield sleep(0.2)
    assert receiver.status is None and receiver.nbytes == 0, receiver.describe()
    receiver_conn.abort()
    client.abort()


@pytest_twisted.inlineCallbacks
def test_a_waiting_sender_that_times_out_frees_its_place(make_server, h2clients):
    server = make_server("--wait-timeout", "1")
    conn = yield h2clients.h2c(server.portnum)
    first = [conn.put(f"/t{i}", b"x", end=False) for i in range(http2.WAITING_PER_CONNECTION)]
    for sender in first:
        yield sender.wait(timeout=10)
        assert sender.lines()[-1].startswith("[ERROR] Not all receivers arrived"), sender.describe()
    again = [conn.put(f"/u{i}", b"x", end=False) for i in range(http2.WAITING_PER_CONNECTION)]
    yield wait_for(lambda: all(s.status is not None for s in again), what="the second round")
    assert [s.status for s in again] == [200] * len(again), [s.describe() for s in again if s.status != 200]
    conn.abort()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_an_h2_client_over_its_queued_budget_gets_no_new_stream(make_server, h2clients):
    """--max-queued-per-client counts what HTTP/2 connections hold for
    their client too: while one connection that opens no window holds pages
    past the budget, a new stream of the same address on another connection
    is refused (REFUSED_STREAM); once that connection goes, it is served."""
    server = make_server("--max-queued-per-client", "65536")
    ledger = server.site.channels
    deaf = yield h2clients.raw(server.portnum, settings={4: 0})
    for i in range(3):
        deaf.request(1 + 2 * i, "/noscript?path=/" + "a" * 3900)
    yield wait_for(lambda: ledger.queuedFor("127.0.0.1") > 65536, what="pages held past the budget")
    other = yield h2clients.raw(server.portnum)
    other.request(1, "/version")
    yield wait_for(lambda: 1 in other.resets, what="the new stream refused")
    assert other.resets == {1: ErrorCodes.REFUSED_STREAM}, other.resets
    deaf.abort()
    yield deaf.wait_closed(10)
    yield wait_for(lambda: ledger.queuedFor("127.0.0.1") == 0, what="the deaf connection's bytes freed")
    other.request(3, "/version")
    yield wait_for(lambda: other.responses.get(3) is not None and other.responses[3].ended,
                   what="/version on the same connection")
    assert other.responses[3].status == 200
    other.abort()


@pytest.mark.parametrize(
    "path", ["/a\x1b[31mred", "/a\x7fb", "/a\tb", "/x\u2028y", "/p HTTP/1.1\" 200 ok"],
    ids=["escape", "delete", "tab", "line-separator", "fake-fields"],
)
@pytest_twisted.inlineCallbacks
def test_a_bad_path_gets_400_and_no_raw_control_is_logged(server, h2clients, path):
    """HTTP/1.1 refuses a target with a byte outside visible ASCII before
    logging it; an h2 ``:path`` is text h2 does not check: refused the same,
    and the access line carries no control character of it."""
    with Lines() as log:
        client = yield h2clients.raw(server.portnum)
        response = client.request(1, path)
        yield wait_for(lambda: response.finished or client.ended, what="the answer")
        yield sleep(0.1)
    if client.goaway is None and response.reset is None:
        assert response.status == 400 and response.body == b"[ERROR] Malformed request.\n", response.describe()
    access = [line for line in log.lines if "in=" in line and "out=" in line]
    assert len(access) == 1 and " 400 refused " in access[0], log.lines
    for line in log.lines:
        assert not any(ch in line for ch in "\x1b\x7f\t\u2028"), repr(line)
        assert 'HTTP/1.1" 200' not in line, line
    client.abort()


@pytest_twisted.inlineCallbacks
def test_no_client_address_in_any_h2_log_line(make_server, h2clients):
    """Every way an HTTP/2 connection of 127.0.0.9 ends (idle, SETTINGS
    never acknowledged, a flood, a protocol error, a stream reset, the
    connection cap) is logged without its address (README: no client
    address in logs; HTTP/1.1: tests/test_http_edges.py)."""
    server = make_server("--idle-timeout", "0.5", "--header-timeout", "0.5",
                         "--max-connections-per-client", "5")
    me = "127.0.0.9"
    with Lines() as log:
        idle = yield h2clients.raw(server.portnum, source=me)
        deaf = yield h2clients.raw(server.portnum, source=me, ack_settings=False)
        broken = yield h2clients.raw(server.portnum, source=me)
        broken.write(frame_bytes([data_frame(2, b"x")]))  # DATA on an idle, even stream
        reset = yield h2clients.raw(server.portnum, source=me)
        reset.request(1, "/r", method="PUT", end_stream=False)
        yield server.wait_sender("/r")
        reset.send(rst_frame(1))
        # Last: a flood spends the budget its address's connections share.
        flood = yield h2clients.raw(server.portnum, source=me)
        flood.write(frame_bytes(ping_frame(b"%08d" % k) for k in range(300)))
        over = yield h2clients.raw(server.portnum, source=me, ready=False)
        for client in (idle, deaf, flood, broken, reset, over):
            yield client.wait_closed(10)
        yield server.wait_empty()
    text = "\n".join(log.lines)
    assert "HTTP/2 flood" in text and "SETTINGS were not acknowledged" in text, text
    assert "PUT /r " in text, text
    assert me not in text, text
