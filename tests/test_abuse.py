# mypy: disable-error-code="arg-type,attr-defined,misc,var-annotated"
"""Abuse over real sockets (SPEC §6 "Malformed HTTP", §9 limits).

Every case is followed by a normal sender/receiver pair on the same server
that must still work (sha256-checked), and the registry must be empty at the
end (the ``make_server`` fixture checks that too). Nothing may be logged as
a failure while the server is abused.
"""

from __future__ import annotations

import fcntl
import os
import random
import struct
import termios

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from abuse_support import (
    FailureLog,
    assert_received,
    assert_rejected,
    assert_sent,
    assert_truncated,
    body_bytes,
    chunk,
    connect,
    exchange,
    get_request,
    held_for,
    normal_pair,
    put_request,
    raise_nofile,
    server_channel,
    sha256,
)
from helpers import sleep, wait_for
from unit_support import make_site  # noqa: F401  (fixture)

BAD = ("HTTP/1.1 400 Bad Request", "[ERROR] Malformed request.")
TOO_LARGE = ("HTTP/1.1 431 Request Header Fields Too Large", "[ERROR] Request headers are too large.")
TOO_SLOW = ("HTTP/1.1 408 Request Timeout", "[ERROR] Request headers took too long.")


@pytest.fixture
def failures():
    with FailureLog() as log:
        yield log
    assert log.events == [], log.describe()


def assert_closed_with(client, status_line, text):
    assert client.is_closed
    assert_rejected(client, status_line, text)
    assert client.response().one("Connection") == "close"


# ---------------------------------------------------------------- malformed


MALFORMED_REQUEST_LINES = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /p\r\n\r\n",
    b"GET /p HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET /p FOO/1.1\r\nHost: x\r\n\r\n",
    b"GET /p HTTP/9.9\r\nHost: x\r\n\r\n",
    b" /p HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00\x01\x02\xff\r\n\r\n",
    b"PUT /p HTTP/1.1\r\nno colon here\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /p HTTP/1.1\r\n: empty name\r\nContent-Length: 3\r\n\r\nabc",
]


@pytest.mark.parametrize("raw", MALFORMED_REQUEST_LINES, ids=repr)
@pytest_twisted.inlineCallbacks
def test_malformed_request(server, failures, raw):
    client = yield exchange(server.portnum, raw)
    assert_closed_with(client, *BAD)
    assert not server.registry.pipes
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_64k_header_line(server, failures):
    raw = get_request("/p", extra=b"X-Big: " + b"a" * 65536 + b"\r\n")
    client = yield exchange(server.portnum, raw)
    assert_closed_with(client, *TOO_LARGE)
    assert not server.registry.pipes
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_64k_request_line(server, failures):
    client = yield exchange(server.portnum, get_request("/" + "a" * 65536))
    assert_closed_with(client, *TOO_LARGE)
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_thousand_headers(server, failures):
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    for raw in (get_request("/p", extra=extra), put_request("/p", b"abc", extra=extra)):
        client = yield exchange(server.portnum, raw)
        assert_closed_with(client, *TOO_LARGE)
    assert not server.registry.pipes
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_configured_header_count_is_exact(make_server, failures):
    server = make_server("--max-headers", "10")
    # Host plus Connection plus 8 more is 10: allowed; one more is not.
    ok = yield exchange(server.portnum, get_request("/version", extra=b"X-A: 1\r\n" * 8))
    assert ok.response().status_line == "HTTP/1.1 200 OK"
    client = yield exchange(server.portnum, get_request("/version", extra=b"X-A: 1\r\n" * 9))
    assert_closed_with(client, *TOO_LARGE)
    yield normal_pair(server)


@pytest.mark.parametrize("length", [b"-1", b"-5", b"abc", b"1x", b"0x10", b"", b"1 2", b"+-3"])
@pytest_twisted.inlineCallbacks
def test_bad_content_length(server, failures, length):
    raw = b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nabcdef"
    client = yield exchange(server.portnum, raw)
    assert_closed_with(client, *BAD)
    assert not server.registry.pipes
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_conflicting_content_lengths(server, failures):
    raw = b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 6\r\n\r\nabcdef"
    client = yield exchange(server.portnum, raw)
    assert_closed_with(client, *BAD)
    yield normal_pair(server)


# ---------------------------------------------------------------- smuggling

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


SMUGGLING_BODY = b"0\r\n\r\n" + SMUGGLED
CL_ALL = b"Content-Length: %d\r\n" % len(SMUGGLING_BODY)


@pytest.mark.parametrize(
    "framing",
    [
        CL_ALL + b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\n" + CL_ALL,
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        CL_ALL + b"Transfer-Encoding: xchunked\r\n",
        CL_ALL + b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: identity\r\n" + CL_ALL,
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        CL_ALL + CL_ALL,
    ],
    ids=repr,
)
@pytest_twisted.inlineCallbacks
def test_smuggling_rejected(server, failures, framing):
    """Ambiguous framing is refused (400, closed) whichever way a proxy in
    front would read it; the request hidden in the body never runs."""
    seen = []
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/s"))
    yield server.wait_receivers("/s", 1)
    raw = b"PUT /s HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + SMUGGLING_BODY
    client = yield connect(server.portnum)
    client.send(raw)
    # Watch for the smuggled request at every turn while the reply comes.
    deadline = server.site.reactor.seconds() + 5
    while not client.is_closed and server.site.reactor.seconds() < deadline:
        seen.append(server.pipe("/smuggled"))
        yield sleep(0.005)
    seen.append(server.pipe("/smuggled"))
    assert not any(seen), "the smuggled request ran"
    assert_closed_with(client, *BAD)
    # The honest receiver was not disturbed: it still waits, and pairs.
    assert receiver.data == b""
    assert len(server.pipe("/s").receivers) == 1
    body = body_bytes(50_000, 3)
    sender = yield connect(server.portnum)
    sender.send(put_request("/s", body))
    yield receiver.wait_closed()
    yield sender.wait_closed()
    assert_received(receiver, body)
    assert_sent(sender)
    yield normal_pair(server)


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest_twisted.inlineCallbacks
def test_request_inside_body_is_body(server, failures, chunked):
    """A body that looks like a request is delivered as bytes, never run."""
    body = SMUGGLED * 3 + b"PUT /smuggled HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/s"))
    sender = yield connect(server.portnum)
    sender.send(put_request("/s", body, chunked=chunked, pieces=3))
    yield receiver.wait_closed()
    yield sender.wait_closed()
    assert_received(receiver, body, chunked=chunked)
    assert_sent(sender)
    assert server.pipe("/smuggled") is None
    yield normal_pair(server)


@pytest.mark.parametrize(
    "header",
    [
        b"X-Piping: a\nSet-Cookie: evil=1\r\n",
        b"Content-Type: text/plain\nSet-Cookie: evil=1\r\n",
        b"Content-Disposition: a\rSet-Cookie: evil=1\r\n",
        b"X-Piping: a\x00b\r\n",
    ],
    ids=repr,
)
@pytest_twisted.inlineCallbacks
def test_header_injection_rejected(server, failures, header):
    """A header value with CR, LF or NUL never reaches a receiver."""
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/inj"))
    yield server.wait_receivers("/inj", 1)
    client = yield exchange(server.portnum, put_request("/inj", b"abc", extra=header))
    assert_closed_with(client, *BAD)
    assert receiver.data == b"" and not receiver.is_closed
    body = body_bytes(10_000, 4)
    sender = yield connect(server.portnum)
    sender.send(put_request("/inj", body))
    yield receiver.wait_closed()
    yield sender.wait_closed()
    assert_received(receiver, body)
    assert b"evil" not in receiver.data
    yield normal_pair(server)


# ---------------------------------------------------------------- broken chunks


#: Broken chunk framing, and the bytes of it that still count as body.
BROKEN_FRAMING = [
    (b"zz\r\n", b""),
    (b"5\r\nabcdefgh\r\n", b"abcde"),
    (b"-1\r\n", b""),
    (b"5\r\nabcde\r\r", b"abcde"),
    (b"\r\n\r\n", b""),
    (b"0x5\r\nabcde\r\n", b""),
    (b"+5\r\nabcde\r\n", b""),
    (b"5_0\r\nabcde\r\n", b""),
    (b"5 \r\nabcde\r\n", b""),
]


#: Framing that breaks only after more than one read of the server.
HUGE_BROKEN_FRAMING = [
    (b"5;" + b"e" * 200_000, b""),  # a chunk-size line that never ends
    (b"0\r\n" + b"X-Trailer: t\r\n" * 50_000, b""),  # endless trailers
]


@pytest.mark.parametrize(
    "broken,delivered",
    BROKEN_FRAMING + HUGE_BROKEN_FRAMING,
    ids=lambda v: repr(v[:40]) if isinstance(v, bytes) else repr(v),
)
@pytest_twisted.inlineCallbacks
def test_broken_chunks_while_streaming(server, failures, broken, delivered):
    """Receivers see a truncated response and a closed connection."""
    first = body_bytes(40_000, 5)
    receivers = []
    for _ in range(2):
        r = yield connect(server.portnum)
        r.send(get_request("/b?n=2"))
        receivers.append(r)
    yield server.wait_receivers("/b", 2)
    sender = yield connect(server.portnum)
    sender.send(b"PUT /b?n=2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(first))
    for r in receivers:
        yield wait_for(lambda r=r: r.nbytes > len(first), what="the first chunk to arrive")
    sender.send(broken)
    for r in receivers:
        yield r.wait_closed(5, "the receiver to be cut")
        assert_truncated(r)
        assert r.response().body == first + delivered
    yield sender.wait_closed(15, "the sender to be cut")
    response = sender.response()
    assert response.status_line == "HTTP/1.1 200 OK"
    assert not response.complete
    yield server.wait_empty()
    yield normal_pair(server, path="/b", chunked=True)


@pytest.mark.parametrize("broken,delivered", BROKEN_FRAMING, ids=repr)
@pytest_twisted.inlineCallbacks
def test_broken_chunks_with_headers_while_receiver_waits(server, failures, broken, delivered):
    """A sender whose body breaks at once leaves; the waiting receiver stays
    and pairs with the next sender."""
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/w?n=2"))
    yield server.wait_receivers("/w", 1)
    bad = yield exchange(
        server.portnum,
        b"PUT /w?n=2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk(b"x" * 100)
        + broken,
    )
    # The 200 of a sender starts at once; its broken body ends it unfinished.
    response = bad.response()
    assert response.status_line == "HTTP/1.1 200 OK"
    assert not response.complete
    assert receiver.data == b"" and not receiver.is_closed
    yield wait_for(lambda: server.pipe("/w").sender is None, what="the broken sender to go")
    body = body_bytes(30_000, 6)
    second = yield connect(server.portnum)
    second.send(get_request("/w?n=2"))
    sender = yield connect(server.portnum)
    sender.send(put_request("/w?n=2", body, chunked=True, pieces=4))
    for r in (receiver, second):
        yield r.wait_closed()
        assert_received(r, body, chunked=True)
    yield sender.wait_closed()
    assert_sent(sender, n=2)
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_sender_disconnects_mid_chunk(server, failures):
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/m"))
    sender = yield connect(server.portnum)
    sender.send(b"PUT /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"y" * 100)
    yield wait_for(lambda: receiver.nbytes > 100, what="the first bytes")
    sender.reset()
    yield receiver.wait_closed(5)
    assert_truncated(receiver)
    yield server.wait_empty()
    yield normal_pair(server, path="/m")


# ---------------------------------------------------------------- bare LF


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /version HTTP/1.1\nHost: x\n\n",
        b"GET /version HTTP/1.1\r\nHost: x\n\r\n",
        b"GET /version HTTP/1.1\r\nHost: x\r\n\n",
        b"PUT /lf HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
    ],
    ids=repr,
)
@pytest_twisted.inlineCallbacks
def test_bare_lf_is_malformed_at_once(make_server, failures, raw):
    """Lines end with CRLF only: a bare LF in a request head (as typed into
    nc) is answered 400 at once, not at the header timeout; nothing is
    dispatched."""
    server = make_server("--header-timeout", "60")
    client = yield connect(server.portnum)
    client.send(raw)
    yield client.wait_closed(5)
    assert_closed_with(client, *BAD)
    assert not server.registry.pipes
    yield normal_pair(server)


def test_bare_lf_typed_a_line_at_a_time(make_site):
    """A request line typed without its end is waited for (up to the header
    timeout, on the site's clock); the bare LF that ends it is answered 400."""
    env = make_site("--header-timeout", "60")
    client = env.client()
    client.send(b"GET /version HTTP/1.1")
    env.clock.advance(59)
    assert client.wire() == b"" and client.open
    client.send(b"\n")
    assert not client.open
    response = client.response()
    assert response.status_line == BAD[0].encode()
    assert response.complete and response.text == BAD[1] + "\n"
    assert response.header(b"Connection") == b"close"
    assert env.registry.pipes == {}


@pytest_twisted.inlineCallbacks
def test_bare_lf_in_request_line_is_malformed(server, failures):
    client = yield exchange(server.portnum, b"GET /version HTTP/1.1\nHost: x\r\n\r\n")
    assert_closed_with(client, *BAD)
    yield normal_pair(server)


# ---------------------------------------------------------------- slowloris


class SiteClock:
    """The reactor as the site sees it, with its time (``seconds`` and
    ``callLater``: request starts, idle and header timeouts) on a
    ``task.Clock`` that moves only when the test advances it."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self.clock = task.Clock()
        self.seconds = self.clock.seconds
        self.callLater = self.clock.callLater

    def __getattr__(self, name: str):
        return getattr(self._reactor, name)


def header_timers(clock: task.Clock):
    """The pending header timeouts, each with its connection's channel."""
    return [
        call for call in clock.getDelayedCalls()
        if getattr(call.func, "__name__", "") == "_headersTooSlow"
    ]


def unread(channel) -> int:
    """Bytes its client sent that the server has not read yet."""
    return struct.unpack("i", fcntl.ioctl(channel.transport.getHandle(), termios.FIONREAD, b"\0" * 4))[0]


@pytest_twisted.inlineCallbacks
def test_slowloris(make_server, failures):
    """200 clients stuck in their request line or headers are all cut with a
    408 when --header-timeout has passed since their first byte, trickling
    or not; parties that sent their headers and wait for their pipe are not
    cut, and pair later. The site's time is a Clock the test moves."""
    raise_nofile(1000)
    server = make_server("--header-timeout", "1")
    site_clock = SiteClock(server.site.reactor)
    server.site.reactor = site_clock  # before any connection (buildProtocol)
    clock = site_clock.clock
    # Waiting parties, on two pipes, whose heads are complete.
    waiting_receiver = yield connect(server.portnum)
    waiting_receiver.send(get_request("/wait-r"))
    body = body_bytes(30_000, 10)
    waiting_sender = yield connect(server.portnum)
    waiting_sender.send(put_request("/wait-s", body, chunked=True, pieces=3))
    yield server.wait_receivers("/wait-r", 1)
    yield server.wait_sender("/wait-s")
    assert header_timers(clock) == []  # their heads are in: no timeout
    lorises = []
    for i in range(200):
        c = yield connect(server.portnum)
        if i % 4 == 3:
            c.send(b"PUT /slow%d HTTP/1.1\r\nHost: x\r\nContent-Le" % i)  # mid-headers
        else:
            c.send(b"GET /slow%d HT" % i)  # mid-request-line
        lorises.append(c)
    # Each one's first bytes are in: its header timeout runs.
    yield wait_for(lambda: len(header_timers(clock)) == 200, what="200 header timeouts")
    timers = {call: call.getTime() for call in header_timers(clock)}
    assert set(timers.values()) == {1.0}
    clock.advance(0.5)
    # Half of them trickle a byte: that must not buy time.
    for c in lorises[::2]:
        c.send(b"T")
    channels = [call.func.__self__ for call in header_timers(clock)]
    writers = reactor.getWriters
    yield wait_for(
        lambda: not any(c.transport in writers() for c in lorises)
        and all(unread(channel) == 0 for channel in channels),
        what="the server to read every trickled byte",
    )
    assert {call: call.getTime() for call in header_timers(clock)} == timers
    # A normal pair works while they all hang on.
    yield normal_pair(server, path="/during")
    assert not any(c.is_closed for c in lorises)
    clock.advance(0.5)
    assert header_timers(clock) == []
    for c in lorises:
        yield c.wait_closed(60, "a slowloris to be cut")
    for c in lorises:
        assert_closed_with(c, *TOO_SLOW)
    assert not any(key[1].startswith(b"/slow") for key in server.registry.pipes)
    # Past the header timeout the waiting parties are still there, and pair.
    assert not waiting_receiver.is_closed and not waiting_sender.is_closed
    assert server.registry.waiting() == 2
    sender = yield connect(server.portnum)
    sender.send(put_request("/wait-r", body))
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/wait-s"))
    for c in (waiting_receiver, sender, receiver, waiting_sender):
        yield c.wait_closed()
    assert_received(waiting_receiver, body, chunked=False)
    assert_received(receiver, body, chunked=True)
    assert_sent(sender)
    assert_sent(waiting_sender)
    assert not server.registry.pipes
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_silent_connections_cut_by_idle_timeout(make_server, failures):
    """Connections that never send a byte are closed by --idle-timeout."""
    server = make_server("--idle-timeout", "1", "--header-timeout", "30")
    silent = []
    for _ in range(100):
        c = yield connect(server.portnum)
        silent.append(c)
    yield normal_pair(server)
    for c in silent:
        yield c.wait_closed(5, "a silent connection to be cut")
        assert c.data == b""
    yield normal_pair(server, path="/again")


# ---------------------------------------------------------------- waiting limits


@defer.inlineCallbacks
def wait_many(server, paths, extra=b"", batch=200, source=None):
    """Open a waiting receiver per path (from ``source``, if given). Fires
    with (waiting, rejected) clients once the server has answered or
    registered every one; each client knows its ``path``."""
    waiting, rejected, clients = [], [], []
    for start in range(0, len(paths), batch):
        batch_clients = []
        for path in paths[start : start + batch]:
            c = yield connect(server.portnum, source=source)
            c.path = path
            c.send(get_request(path, close=False, extra=extra))
            batch_clients.append(c)
        clients += batch_clients
        # Every request is in once each got a reply or is counted waiting.
        yield wait_for(
            lambda: sum(len(c.data) > 0 for c in clients) + server.registry.waiting() >= len(clients),
            timeout=20,
            what="the server to take every request",
        )
    for c in clients:
        (rejected if c.data else waiting).append(c)
    return waiting, rejected


def assert_over_limit(client, text):
    response = client.response()
    assert response.status_line == "HTTP/1.1 503 Service Unavailable", response.status_line
    assert response.complete
    assert response.one("Retry-After") is not None
    assert int(response.one("Retry-After")) > 0
    assert response.one("Content-Type") == "text/plain"
    assert response.body.startswith(b"[ERROR]")
    assert response.body == (text + "\n").encode()


@pytest_twisted.inlineCallbacks
def test_max_waiting(make_server, failures):
    raise_nofile(5000 * 2 + 500)
    server = make_server("--max-waiting", "1000", "--max-waiting-per-client", "100000")
    paths = [f"/p{i}" for i in range(5000)]
    waiting, rejected = yield wait_many(server, paths)
    assert len(waiting) == 1000
    assert len(rejected) == 4000
    assert server.registry.waiting() == 1000
    assert len(server.registry.pipes) == 1000
    for c in rejected:
        assert_over_limit(c, "[ERROR] Too many parties are waiting on this server.")
        c.close()
    # At the limit, one more party that would wait is refused...
    lonely = yield exchange(server.portnum, get_request("/one-more"))
    assert_over_limit(lonely, "[ERROR] Too many parties are waiting on this server.")
    lonely = yield exchange(server.portnum, put_request("/one-more", b"abc"))
    assert_over_limit(lonely, "[ERROR] Too many parties are waiting on this server.")
    # ...but a party that completes a pipe is still welcome.
    first = waiting[0]
    path = first.path
    body = body_bytes(20_000, 8)
    sender = yield connect(server.portnum)
    sender.send(put_request(path, body))
    yield sender.wait_closed()
    assert_sent(sender)
    yield wait_for(lambda: first.response().complete, what="the completed receiver")
    assert_received(first, body)
    assert server.registry.waiting() == 999
    for c in waiting:
        c.close()
    for c in rejected + waiting:
        yield c.wait_closed()
    yield server.wait_empty(timeout=10)
    assert server.registry.waiting() == 0
    assert server.registry.waitingByProject == {}
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_max_waiting_per_project(make_server, failures, tmp_path):
    from pipeserver.web.tokens import hash_token

    tokens = tmp_path / "tokens"
    tokens.write_text(f"alpha {hash_token('tok-a')}\nbeta {hash_token('tok-b')}\n")
    server = make_server(
        "--tokens", str(tokens), "--max-waiting", "1000", "--max-waiting-per-project", "50"
    )
    alpha = b"Authorization: Bearer tok-a\r\n"
    beta = b"Authorization: Bearer tok-b\r\n"
    waiting, rejected = yield wait_many(server, [f"/a{i}" for i in range(120)], extra=alpha)
    assert len(waiting) == 50 and len(rejected) == 70
    for c in rejected:
        assert_over_limit(c, "[ERROR] Too many parties are waiting in this project.")
    assert server.registry.waitingByProject == {"alpha": 50}
    # Another project is not held back by alpha.
    body = body_bytes(20_000, 9)
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/b", extra=beta))
    yield server.wait_receivers("/b", 1)
    sender = yield connect(server.portnum)
    sender.send(put_request("/b", body, extra=beta))
    yield receiver.wait_closed()
    yield sender.wait_closed()
    assert_received(receiver, body)
    assert_sent(sender)
    # Senders count as waiting parties too.
    lonely = yield exchange(server.portnum, put_request("/a-sender", b"abc", extra=alpha))
    assert_over_limit(lonely, "[ERROR] Too many parties are waiting in this project.")
    for c in waiting + rejected:
        c.close()
    for c in waiting + rejected:
        yield c.wait_closed()
    yield server.wait_empty()
    assert server.registry.waiting() == 0
    # Tokens are needed for the pair now, so do it by hand in alpha.
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/after", extra=alpha))
    sender = yield connect(server.portnum)
    sender.send(put_request("/after", body, extra=alpha, chunked=True, pieces=5))
    yield receiver.wait_closed()
    yield sender.wait_closed()
    assert_received(receiver, body, chunked=True)
    assert_sent(sender)


# ---------------------------------------------------------------- all at once


@pytest_twisted.inlineCallbacks
def test_abuse_during_a_transfer(server, failures):
    """Every malformed request above, at once, while a transfer streams:
    each is answered, and the transfer is untouched."""
    first, rest = body_bytes(200_000, 11), body_bytes(200_000, 12)
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/live"))
    sender = yield connect(server.portnum)
    sender.send(
        b"PUT /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk(first)
    )
    yield wait_for(lambda: receiver.nbytes > len(first), what="the first half")
    raws = list(MALFORMED_REQUEST_LINES)
    raws += [b"PUT /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n"]
    raws += [b"PUT /s HTTP/1.1\r\nHost: x\r\n" + CL_ALL + b"Transfer-Encoding: chunked\r\n\r\n" + SMUGGLING_BODY]
    raws += [get_request("/p", extra=b"X-H: v\r\n" * 1000)]
    replies = yield defer.gatherResults([exchange(server.portnum, raw) for raw in raws])
    for client in replies[:-1]:
        assert_closed_with(client, *BAD)
    assert_closed_with(replies[-1], *TOO_LARGE)
    assert set(server.registry.pipes) == {("", b"/live")}
    sender.send(chunk(rest) + chunk(b""))
    yield receiver.wait_closed()
    yield sender.wait_closed()
    assert_received(receiver, first + rest, chunked=True)
    assert_sent(sender)
    yield normal_pair(server)


# ---------------------------------------------------------------- unread responses

#: A request of 4 KB whose answer is ~120 KB (the path is echoed, escaped).
BIG_PAGE = "/noscript?path=" + "'" * 4000


class Answered:
    """Counts the access lines of ``path`` while installed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0

    def __call__(self, event) -> None:
        if event.get("log_namespace") == "pipeserver.access" and event.get("path") == self.path:
            self.count += 1

    def __enter__(self) -> "Answered":
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc) -> None:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.removeObserver(self)


@defer.inlineCallbacks
def settled(read, quiet: float = 0.5, timeout: float = 20.0):
    """Fires once ``read()`` has not changed for ``quiet`` seconds."""
    last, since = read(), reactor.seconds()
    deadline = since + timeout
    while reactor.seconds() < deadline:
        yield sleep(0.05)
        now = read()
        if now != last:
            last, since = now, reactor.seconds()
        elif reactor.seconds() - since >= quiet:
            return now
    raise AssertionError("never settled")


@defer.inlineCallbacks
def wait_answers(client, count: int, timeout: float = 30.0):
    """Fires once ``client`` got ``count`` answers, the last one whole."""
    yield wait_for(lambda: client.data.count(b"HTTP/1.1 200 OK\r\n") >= count, timeout,
                   what=f"{count} answers")
    yield wait_for(lambda: client.responses()[-1].complete, timeout, what="the last answer")


@defer.inlineCallbacks
def deaf_pipeliner(server, count: int, source: str = "127.0.0.2", path: str = BIG_PAGE):
    """A connection that stops reading, then sends ``count`` pipelined GETs."""
    client = yield connect(server.portnum, source=source)
    client.transport.pauseProducing()  # reads nothing from now on
    client.send(get_request(path, close=False) * count)
    return client


@pytest_twisted.inlineCallbacks
def test_pipelined_requests_are_answered_as_fast_as_they_are_taken(server, failures):
    """Issue 22 item 8: three connections pipeline 150 requests each for a
    120 KB page and read nothing. The server answers only what the kernels
    take, then reads and parses nothing more on them (it held 41.6 MiB per
    connection): it holds one answer and one read each, and counts what it
    holds on their client's tab. Another client is served meanwhile; once
    they read, every answer comes, whole and in order."""
    reference = yield exchange(server.portnum, get_request(BIG_PAGE))
    page = reference.response()
    assert page.status == 200 and len(page.body) > 100_000
    with Answered("/noscript") as answered:
        deaf = []
        for _ in range(3):
            client = yield deaf_pipeliner(server, 150)
            deaf.append(client)
        yield settled(lambda: answered.count)
        assert answered.count < 3 * 150 // 2, answered.count
        channels = [server_channel(server, c) for c in deaf]
        held = [held_for(channel) for channel in channels]
        assert all(h < len(page.body) + 256 * 1024 for h in held), held
        ledger = server.site.channels
        # On the tab: what each held when its last answer ended (one answer
        # at most), until all of it has gone.
        assert 0 < ledger.queuedFor("127.0.0.2") <= 3 * (len(page.body) + 1024)
        yield normal_pair(server, source="127.0.0.3")
        for client in deaf:
            client.transport.resumeProducing()
        for client in deaf:
            yield wait_answers(client, 150)
        for client in deaf:
            bodies = {sha256(r.body) for r in client.responses()}
            assert bodies == {sha256(page.body)}
            assert all(r.status == 200 and r.complete for r in client.responses())
        assert answered.count == 450
    yield wait_for(lambda: ledger.queuedFor("127.0.0.2") == 0, what="the tab to be clear")
    for client in deaf:
        client.close()
        yield client.wait_closed()
    yield wait_for(lambda: ledger.accounts == {}, what="every connection to go")


@pytest_twisted.inlineCallbacks
def test_a_receiver_that_reads_nothing_and_sends_on_is_not_read(server, failures):
    """A receiver that takes nothing of its pipe and sends bytes after its
    GET: past 16 KiB the server stops reading it, even while its transport
    is full (it read 890 MB in 6 s). The pipe goes on at its pace."""
    receiver = yield connect(server.portnum)
    receiver.transport.pauseProducing()
    receiver.send(get_request("/deaf"))
    yield server.wait_receivers("/deaf", 1)
    sender = yield connect(server.portnum)
    size = 64 * 1024 * 1024
    sender.send(b"PUT /deaf HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    sender.send(b"s" * (8 * 1024 * 1024))
    channel = server_channel(server, receiver)
    yield wait_for(lambda: channel.waitingForTransport(), what="the receiver's transport to fill")
    for _ in range(64):
        receiver.send(b"J" * 65536)
    yield sleep(0.5)
    yield settled(lambda: channel.unparsedBytes())
    assert channel.unparsedBytes() < 16 * 1024 + 2 * 65536, channel.unparsedBytes()
    receiver.reset()
    sender.reset()
    yield server.wait_empty()
    yield normal_pair(server)


@pytest_twisted.inlineCallbacks
def test_a_client_over_its_queued_budget_starts_nothing_new(make_server, failures):
    """--max-queued-per-client: while what one address leaves untaken is past
    it, a new request of that address on another connection waits, unread;
    another address is served at once. Once it reads, both go on."""
    server = make_server("--max-queued-per-client", "1")
    ledger = server.site.channels
    deaf = yield deaf_pipeliner(server, 60)
    # Once the kernels are full, its answers wait in the server: past 1 byte.
    queued = yield settled(lambda: ledger.queuedFor("127.0.0.2"))
    assert queued > 1
    same = yield connect(server.portnum, source="127.0.0.2")
    same.send(get_request("/version"))
    other = yield exchange(server.portnum, get_request("/version"), source="127.0.0.3")
    assert other.response().status == 200
    yield sleep(0.5)
    assert same.data == b""
    deaf.transport.resumeProducing()
    yield same.wait_closed(10, "the waiting request to be answered")
    assert same.response().status == 200
    yield wait_answers(deaf, 60)
    answers = deaf.responses()
    assert len(answers) == 60 and all(r.status == 200 and r.complete for r in answers)
    deaf.close()
    yield deaf.wait_closed()
    yield wait_for(lambda: ledger.accounts == {}, what="every connection to go")


# ---------------------------------------------------------------- bodies that go nowhere


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "PUT /version"])
@pytest_twisted.inlineCallbacks
def test_a_body_that_goes_nowhere_must_come_within_the_header_timeout(
        make_server, failures, method):
    """Issue 22 item 16: a request whose body is no pipe's (a GET's, or a
    refused upload's) trickling a byte at a time under the idle timeout is
    cut at --header-timeout (it was kept for ever); a pipe's upload that
    trickles longer is not, and arrives whole."""
    server = make_server("--header-timeout", "1", "--idle-timeout", "30")
    body = body_bytes(3000, 31)
    receiver = yield connect(server.portnum)
    receiver.send(get_request("/slow"))
    yield server.wait_receivers("/slow", 1)
    uploader = yield connect(server.portnum)
    uploader.send(b"PUT /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
    verb, _, target = method.partition(" ")
    trickler = yield connect(server.portnum)
    trickler.send(f"{verb} {target or '/version'} HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: 1000\r\n\r\n".encode())
    started = reactor.seconds()
    for i in range(30):  # 3 s of a byte (and a chunk) every 0.1 s
        trickler.send(b"x")
        uploader.send(chunk(body[i * 100:(i + 1) * 100]))
        yield sleep(0.1)
        if trickler.is_closed and i >= 20:
            break
    yield trickler.wait_closed(5, "the trickler to be cut")
    assert reactor.seconds() - started < 2.5
    if verb == "PUT":
        # Refused at its head already: its answer stands, then the close.
        response = trickler.response()
        assert response.status == 400 and response.complete
    else:
        assert_closed_with(trickler, "HTTP/1.1 408 Request Timeout",
                           "[ERROR] Request body took too long.")
    uploader.send(chunk(body[(i + 1) * 100:]) + chunk(b""))
    yield receiver.wait_closed()
    yield uploader.wait_closed()
    assert_received(receiver, body, chunked=True)
    assert_sent(uploader)
    yield normal_pair(server)
