# mypy: disable-error-code="arg-type,override,union-attr"
"""Helpers of the abuse, property and soak tests (tests/test_abuse.py,
tests/test_property.py, tests/test_soak.py).

Raw HTTP clients on the global reactor (never a blocking socket), a strict
parser for what the server wrote on one connection, and a "normal pair" that
proves a server still works after it was abused.
"""

from __future__ import annotations

import hashlib
import random
import resource
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher

import http_wire
from helpers import with_timeout
from http_wire import CRLF


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------- file limit


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE towards the hard limit; skip loudly if ``needed``
    descriptors cannot be had. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        pytest.skip(
            f"SKIPPED LOUDLY: this test needs {needed} file descriptors, "
            f"RLIMIT_NOFILE is soft={soft} hard={hard}"
        )
    return soft


# ---------------------------------------------------------------- responses


@dataclass
class Response:
    status_line: str
    headers: List[Tuple[str, str]]
    body: bytes = b""
    #: The response ended properly: the last chunk, or all of Content-Length.
    complete: bool = False
    chunked: bool = False

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ")[1])

    def values(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def one(self, name: str) -> Optional[str]:
        values = self.values(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_responses(data: bytes, head: bool = False) -> List[Response]:
    """Split what the server wrote on one connection into responses
    (tests/http_wire.py; HTTP/1.0 allowed too). The last response may be
    unfinished (``complete`` False)."""
    return [
        Response(
            r.status_line.decode("latin-1"),
            [(name.decode("latin-1"), value.decode("latin-1")) for name, value in r.headers],
            r.body,
            r.complete,
            r.chunked,
        )
        for r in http_wire.parse_responses(
            bytes(data), head, versions=(b"HTTP/1.1", b"HTTP/1.0")
        )
    ]


def final(responses: Sequence[Response]) -> Response:
    """The one final (non-1xx) response."""
    finals = [r for r in responses if r.status >= 200]
    assert len(finals) == 1, [r.status_line for r in responses]
    return finals[0]


# ---------------------------------------------------------------- raw clients


class RawClient(Protocol):
    """A TCP client that records every byte the server sends."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: defer.Deferred = defer.Deferred()
        self.is_closed = False
        self.reason: Any = None
        self.nbytes = 0

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.nbytes += len(data)

    def connectionLost(self, reason: Any) -> None:
        self.is_closed = True
        self.reason = reason
        self.closed.callback(self)

    # use
    def send(self, data: bytes) -> None:
        if not self.is_closed:
            self.transport.write(data)

    def close(self) -> None:
        """An orderly close (FIN)."""
        if not self.is_closed:
            self.transport.loseConnection()

    def reset(self) -> None:
        """Close with a RST, as a killed process with unread data would."""
        if self.is_closed:
            return
        try:
            self.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass
        self.transport.abortConnection()

    def kill(self, rst: bool) -> None:
        self.reset() if rst else self.close()

    def wait_closed(self, timeout: float = 10.0, what: str = "the server to close") -> defer.Deferred:
        if self.is_closed:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()

        def fire(result: Any) -> Any:
            if not d.called:
                d.callback(result)
            return result

        self.closed.addBoth(fire)
        return with_timeout(d, timeout, what)

    def responses(self, head: bool = False) -> List[Response]:
        return parse_responses(bytes(self.data), head=head)

    def response(self) -> Response:
        return final(self.responses())


_connect_slots = defer.DeferredSemaphore(40)


def connect(port: int, timeout: float = 10.0, source: Optional[str] = None) -> defer.Deferred:
    """A connected :class:`RawClient` to 127.0.0.1:port, from the loopback
    address ``source`` (e.g. 127.0.0.2: another client) if given.

    At most 40 connects are in flight, so the listen backlog (50) never
    overflows and no SYN waits a second to be retried.
    """
    bind = (source, 0) if source is not None else None

    def go() -> defer.Deferred:
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, timeout=timeout, bindAddress=bind
        )
        return connectProtocol(endpoint, RawClient())

    return _connect_slots.run(go)


@defer.inlineCallbacks
def exchange(port: int, data: bytes, timeout: float = 10.0, source: Optional[str] = None):
    """Send ``data`` on a fresh connection; fire with the client once the
    server has closed it."""
    client = yield connect(port, source=source)
    client.send(data)
    yield client.wait_closed(timeout, f"the server to close after {data[:60]!r}")
    return client


def get_request(path: str, close: bool = True, extra: bytes = b"") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
        + (b"Connection: close\r\n" if close else b"")
        + extra
        + CRLF
    )


def put_request(
    path: str,
    body: bytes,
    chunked: bool = False,
    close: bool = True,
    method: str = "PUT",
    extra: bytes = b"",
    pieces: int = 1,
    rnd: Optional[random.Random] = None,
) -> bytes:
    """A whole upload: head and body (chunked in ``pieces`` random chunks)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra
    if close:
        head += b"Connection: close\r\n"
    if not chunked:
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked_body(body, pieces, rnd)


def chunk(data: bytes) -> bytes:
    if not data:
        return b"0\r\n\r\n"
    return b"%x\r\n" % len(data) + data + CRLF


def chunked_body(body: bytes, pieces: int = 1, rnd: Optional[random.Random] = None) -> bytes:
    rnd = rnd or random.Random(0)
    cuts = sorted(rnd.randrange(len(body) + 1) for _ in range(max(0, pieces - 1)))
    out, last = [], 0
    for cut in cuts + [len(body)]:
        if cut > last:
            out.append(chunk(body[last:cut]))
        last = cut
    out.append(chunk(b""))
    return b"".join(out)


# ---------------------------------------------------------------- checks


SENDER_DONE = "[INFO] All receiver(s) was/were received successfully."


def assert_received(client: RawClient, body: bytes, chunked: Optional[bool] = None) -> None:
    """The receiver got a complete 200 whose body is exactly ``body``."""
    response = client.response()
    assert response.status_line == "HTTP/1.1 200 OK", (response.status_line, client.data[:300])
    assert response.complete, f"truncated: {len(response.body)} of {len(body)} bytes"
    assert sha256(response.body) == sha256(body), f"{len(response.body)} vs {len(body)} bytes"
    if chunked is not None:
        assert response.chunked == chunked
        if not chunked:
            assert response.one("Content-Length") == str(len(body))


def assert_sent(client: RawClient, n: int = 1) -> None:
    response = client.response()
    assert response.status_line == "HTTP/1.1 200 OK", (response.status_line, client.data[:300])
    assert response.complete, bytes(client.data[-300:])
    lines = response.text.splitlines()
    assert lines[0] == f"[INFO] Waiting for {n} receiver(s)...", lines
    assert f"[INFO] Start sending to {n} receiver(s)!" in lines, lines
    assert lines[-2:] == ["[INFO] Sent successfully!", SENDER_DONE], lines


def assert_truncated(client: RawClient) -> None:
    """A receiver whose stream broke: 200, then a close before the end."""
    response = client.response()
    assert response.status_line == "HTTP/1.1 200 OK", response.status_line
    assert not response.complete, "a broken stream must not look complete"
    assert client.is_closed


def assert_rejected(client: RawClient, status_line: str, text: str) -> None:
    response = client.response()
    assert response.status_line == status_line, (response.status_line, client.data[:300])
    assert response.complete
    assert response.one("Content-Type") == "text/plain"
    assert response.one("Access-Control-Allow-Origin") == "*"
    assert response.body == (text + "\n").encode(), response.body


@defer.inlineCallbacks
def normal_pair(
    server: Any,
    path: str = "/after",
    size: int = 100_000,
    seed: int = 7,
    chunked: bool = False,
    source: Optional[str] = None,
):
    """A fresh receiver and sender on ``path`` (from ``source``, if given)
    complete a sha256-checked transfer, and the path is free afterwards."""
    body = body_bytes(size, seed)
    receiver = yield connect(server.portnum, source=source)
    receiver.send(get_request(path))
    sender = yield connect(server.portnum, source=source)
    sender.send(put_request(path, body, chunked=chunked, pieces=7, rnd=random.Random(seed)))
    yield receiver.wait_closed(15, f"the receiver on {path} to finish")
    yield sender.wait_closed(15, f"the sender on {path} to finish")
    assert_received(receiver, body, chunked=chunked)
    assert_sent(sender)
    yield server.wait_gone(path, timeout=5)


def server_channel(server: Any, client: RawClient) -> Any:
    """The server's channel of the raw ``client``'s connection."""
    port = client.transport.getHost().port
    for channel in server.site.channels:
        if channel.transport.getPeer().port == port:
            return channel
    raise AssertionError("no server channel for this client")


def held_for(channel: Any) -> int:
    """Bytes the server holds for ``channel``'s connection: what its transport
    has not sent yet, and what it read from its client and not parsed."""
    from pipeserver.http.fastpath import buffered_bytes

    return buffered_bytes(channel.transport) + channel.unparsedBytes()


# ---------------------------------------------------------------- logging


@dataclass
class FailureLog:
    """Every logged failure or error event, while installed."""

    events: List[Dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: Dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.events.append(event)

    def __enter__(self) -> "FailureLog":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self)

    def describe(self) -> str:
        from twisted.logger import formatEvent

        out = []
        for event in self.events:
            failure = event.get("log_failure")
            out.append(formatEvent(event) + ("\n" + failure.getTraceback() if failure else ""))
        return "\n---\n".join(out)
