# mypy: disable-error-code="misc"
"""HTTP/2 floods and limits with raw frames on a real socket, and the drain
at shutdown (SPEC §9, §10 and §11; issue 12 items 4 and 5).

Each flood must end its own connection (GOAWAY with the error code, or a
close) after a bounded number of frames, while an HTTP/1.1 curl pair on
other connections completes with the right bytes, during the flood and after.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from h2.errors import ErrorCodes
from twisted.internet import defer
from twisted.internet.error import ConnectionDone

import helpers
from h2_support import (
    PREFACE,
    continuation_frame,
    data_frame,
    flood,
    frame_bytes,
    h2clients,  # noqa: F401  (fixture)
    headers_block,
    headers_frame,
    ping_frame,
    rst_frame,
    settings_frame,
)
from helpers import curl, make_file, sleep, wait_for
from pipeserver.ops import tap
from pipeserver.http.fastpath import buffered_bytes

MiB = 1024 * 1024
SUCCESS = "[INFO] All receiver(s) was/were received successfully."
CALM = ErrorCodes.ENHANCE_YOUR_CALM


@defer.inlineCallbacks
def curl_pair(server, procs, tmp_path, path: str, size: int = 2 * MiB):
    """An HTTP/1.1 curl receiver and sender on ``path``; fires once both
    are done, having checked the bytes and the sender's last line."""
    body = str(tmp_path / (path.strip("/") + ".body"))
    expected = make_file(body, size, seed=len(path))
    receiver = procs.spawn(curl("-f", "--http1.1", server.url(path)), name=f"receiver {path}", keep=False)
    sender = procs.spawn(curl("-f", "--http1.1", "-T", body, server.url(path)), name=f"sender {path}")
    yield receiver.wait(timeout=20)
    yield sender.wait(timeout=20)
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    assert sender.exit_code == 0 and sender.lines()[-1] == SUCCESS, sender.describe()


def server_buffers(server) -> int:
    return sum(buffered_bytes(getattr(c, "transport", None)) for c in list(server.site.channels))


@defer.inlineCallbacks
def flood_while_pairing(server, procs, tmp_path, client, batch, batches, codes):
    """Flood on ``client`` while a curl pair runs; then check the flood got
    GOAWAY with one of ``codes`` (or the connection closed), that the server
    holds little, and that another pair works after."""
    during = curl_pair(server, procs, tmp_path, "/during")
    written = yield flood(client, batch, batches)
    yield wait_for(lambda: client.ended, timeout=15,
                   what=f"GOAWAY or a close after {written} batches of the flood")
    # The GOAWAY's code when it arrives. It may not: the server closes while
    # the rest of the flood sits unread in its socket, so its kernel sends a
    # RST, which can destroy the GOAWAY before a loaded client reads it.
    if client.goaway is not None:
        assert client.goaway[0] in codes, client.goaway
    else:
        yield client.wait_closed(20)
        assert not client.reason.check(ConnectionDone), "closed cleanly without a GOAWAY"
    assert written < batches, "the whole flood was taken"
    yield during
    yield curl_pair(server, procs, tmp_path, "/after")
    assert server_buffers(server) < 1 * MiB
    yield client.wait_closed(20, "the flooded connection to close")
    return written


@pytest_twisted.inlineCallbacks
def test_rapid_reset(server, procs, tmp_path, h2clients):
    client = yield h2clients.raw(server.portnum)

    def batch(i: int) -> bytes:
        frames = []
        for k in range(100):
            sid = 1 + 2 * (i * 100 + k)
            block = headers_block(client.encoder, f"/rr{sid}")
            frames += [headers_frame(sid, block), rst_frame(sid)]
        return frame_bytes(frames)

    yield flood_while_pairing(server, procs, tmp_path, client, batch, 500, {CALM})
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_continuation_flood(server, procs, tmp_path, h2clients):
    client = yield h2clients.raw(server.portnum)
    block = headers_block(client.encoder, "/cont")
    client.send(headers_frame(1, block, end_stream=True, end_headers=False))
    junk = b"x" * 1024

    def batch(i: int) -> bytes:
        return frame_bytes(continuation_frame(1, junk) for _ in range(50))

    yield flood_while_pairing(server, procs, tmp_path, client, batch, 2000,
                              {ErrorCodes.PROTOCOL_ERROR, CALM})
    # The header block never ended: no request was made of it.
    assert 1 not in client.responses or client.responses[1].status is None
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_settings_flood(server, procs, tmp_path, h2clients):
    client = yield h2clients.raw(server.portnum)

    def batch(i: int) -> bytes:
        return frame_bytes(settings_frame({4: 65535 + (i % 7)}) for _ in range(100))

    yield flood_while_pairing(server, procs, tmp_path, client, batch, 1000, {CALM})


@pytest_twisted.inlineCallbacks
def test_ping_flood_without_reading_the_replies(server, procs, tmp_path, h2clients):
    client = yield h2clients.raw(server.portnum)
    client.transport.pauseProducing()  # read nothing: the PING ACKs pile up
    during = curl_pair(server, procs, tmp_path, "/during")
    written = 0
    for i in range(2000):
        if client.is_closed:
            break
        client.write(frame_bytes(ping_frame(b"%08d" % (i % 10**8)) for _ in range(100)))
        written += 1
        assert server_buffers(server) < 1 * MiB
        yield sleep(0)
        if client.unread() > 8 * MiB:
            break  # the server stopped reading us: that is a bound too
    yield during
    # Now read: a GOAWAY (ENHANCE_YOUR_CALM) is there, or the connection is gone.
    client.transport.resumeProducing()
    yield wait_for(lambda: client.ended, timeout=15, what="GOAWAY or a close after the PING flood")
    if client.goaway is not None:
        assert client.goaway[0] == CALM, client.goaway
    assert client.counts.get("PingFrame", 0) < written * 100, "every PING was answered"
    yield curl_pair(server, procs, tmp_path, "/after")
    yield client.wait_closed(20)


@pytest_twisted.inlineCallbacks
def test_empty_data_frame_flood(server, procs, tmp_path, h2clients):
    client = yield h2clients.raw(server.portnum)
    client.request(1, "/empty", method="PUT", end_stream=False)
    yield server.wait_sender("/empty")

    def batch(i: int) -> bytes:
        return frame_bytes(data_frame(1) for _ in range(100))

    yield flood_while_pairing(server, procs, tmp_path, client, batch, 1000, {CALM})
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_streams_beyond_the_maximum_are_refused(make_server, procs, h2clients):
    server = make_server("--h2-max-streams", "4")
    client = yield h2clients.raw(server.portnum)
    assert client.server_settings.get(3) == 4, client.server_settings  # MAX_CONCURRENT_STREAMS
    yield wait_for(lambda: client.counts.get("SettingsFrame", 0) >= 2 or client.ended,
                   what="the server's ACK of our SETTINGS")
    for i in range(5):
        client.request(1 + 2 * i, f"/ms{i}")
    yield wait_for(lambda: 9 in client.resets or client.ended, what="stream 9 to be refused")
    assert client.goaway is None, client.goaway
    assert client.resets == {9: ErrorCodes.REFUSED_STREAM}, client.resets
    for i in range(4):
        yield server.wait_receivers(f"/ms{i}", 1)
    # The four streams are intact: one of them completes its pipe.
    sender = procs.spawn(curl("--http1.1", "-T", "-", server.url("/ms0")), stdin=os.devnull)
    yield client.response(1).wait()
    yield sender.wait()
    assert client.response(1).status == 200 and client.response(1).ended
    assert sender.lines()[-1] == SUCCESS, sender.describe()
    # Once one is gone, a fifth stream is taken.
    client.request(11, "/ms5")
    yield server.wait_receivers("/ms5", 1)
    assert 11 not in client.resets
    client.abort()
    yield server.wait_empty()


@pytest.mark.parametrize("size", [12_000, 900_000], ids=["one-frame", "continuations"])
@pytest_twisted.inlineCallbacks
def test_header_list_over_max_header_bytes_is_refused(make_server, procs, tmp_path, h2clients, size):
    server = make_server("--max-header-bytes", "8192")
    # A header list well under the limit is served.
    fine = yield h2clients.h2c(server.portnum)
    version = fine.get("/version", headers=[("x-fine", "b" * 4000)])
    yield version.wait()
    assert version.status == 200 and version.ended, version.describe()
    client = yield h2clients.raw(server.portnum)
    block = headers_block(client.encoder, "/big", extra=[("x-big", "a" * size)])
    # 16 KiB frames: HEADERS then CONTINUATIONs, the last one ending the block.
    pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    frames = [headers_frame(1, pieces[0], end_stream=True, end_headers=len(pieces) == 1)]
    frames += [continuation_frame(1, p, end_headers=(k == len(pieces) - 1))
               for k, p in enumerate(pieces[1:], 1)]
    client.send(*frames)
    yield wait_for(
        lambda: client.ended or 1 in client.resets or client.response(1).status is not None,
        what="the oversized header list to be refused",
    )
    refused = (
        client.goaway is not None
        or client.is_closed
        or client.resets.get(1) is not None
        or client.response(1).status == 431
    )
    assert refused, (client.goaway, client.resets, client.response(1).describe())
    assert client.response(1).status in (None, 431), client.response(1).describe()
    assert not server.registry.pipes
    # The server goes on.
    yield curl_pair(server, procs, tmp_path, "/after", size=100_000)
    client.abort()


@pytest_twisted.inlineCallbacks
def test_shutdown_sends_goaway_and_drains_an_h2_transfer(make_server, h2clients):
    server = make_server()
    first, rest = os.urandom(300_000), os.urandom(300_000)
    client = yield h2clients.h2c(server.portnum)
    receiver = client.get("/drain")
    yield server.wait_receivers("/drain", 1)
    sender = client.put("/drain", first, end=False)
    yield receiver.wait_bytes(len(first))
    drained = tap.PipeService(server.wiring, 20.0).stopService()
    # SIGTERM: GOAWAY (NO_ERROR) while the transfer goes on.
    yield client.wait_goaway(timeout=5)
    code, last, _ = client.goaway
    assert code == ErrorCodes.NO_ERROR, client.goaway
    assert last >= sender.id, client.goaway
    assert not receiver.finished and not sender.finished
    # New streams are refused: above last_stream_id, or on a new connection.
    late = yield h2clients.h2c(server.portnum, ready=False)
    yield wait_for(lambda: late.remote_settings or late.is_closed or late.goaway, what="the late client")
    if not late.is_closed and late.goaway is None:
        refused = late.get("/late")
        yield refused.wait()
        assert refused.reset == ErrorCodes.REFUSED_STREAM or (
            refused.status == 503 and refused.body == b"[ERROR] The server is shutting down.\n"
        ), refused.describe()
    # The transfer in flight completes.
    sender.send(rest)
    sender.end()
    yield receiver.wait()
    yield sender.wait()
    assert receiver.ended and receiver.body == first + rest, receiver.describe()
    assert sender.ended and sender.lines()[-1] == SUCCESS, sender.describe()
    yield helpers.with_timeout(drained, 30, "the drain")
    assert server.registry.pipes == {}
    assert server.registry.cutAtShutdown == 0
    yield client.wait_closed(20)


@pytest_twisted.inlineCallbacks
def test_sigterm_drains_h2c_curl_transfers_and_exits_0(procs, tmp_path):
    """The real twistd: SIGTERM while an h2c curl pair is mid-body; the
    transfer completes within the grace and twistd exits 0."""
    from test_service import start_twistd

    server, base = yield start_twistd(procs, tmp_path, "--shutdown-grace", "20")
    first, rest = tmp_path / "first", tmp_path / "rest"
    make_file(str(first), 300_000, seed=15)
    make_file(str(rest), 300_000, seed=16)
    expected = helpers.sha256(first.read_bytes() + rest.read_bytes())
    gate = str(tmp_path / "gate")
    receiver = procs.spawn(curl("-f", "--http2-prior-knowledge", base + "/h2drain"))
    _, sender = procs.pipeline(
        helpers.gated(str(first), gate, str(rest)),
        curl("-f", "--http2-prior-knowledge", "-T", "-", base + "/h2drain"),
    )
    yield helpers.has_received(receiver, 300_000)
    server.kill(15)
    yield wait_for(lambda: b"Shutting down: 1 pipe(s) open" in bytes(server.out),
                   what="the drain to start")
    helpers.open_gate(gate)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    assert sender.exit_code == 0 and sender.lines()[-1] == SUCCESS, sender.describe()
    yield server.wait()
    assert (server.exit_code, server.signal) == (0, None), server.describe()
    assert b"Traceback" not in bytes(server.out), server.describe()
