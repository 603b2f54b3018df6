# mypy: disable-error-code="arg-type,attr-defined"
"""Socket-free helpers for the unit tests: a fake TCP transport, an HTTP client
driving a ``PipeChannel`` by hand, and (from tests/http_wire.py) the parser
for what it wrote on the wire.

Used by tests/test_pipe_unit.py and tests/test_twisted_internals.py only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import pytest
from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from pipeserver.ops import tap
from pipeserver.domain.pipe import Pipe

from http_wire import CRLF, Response, parse_responses  # noqa: F401  (re-exported)


class FakeTCP(StringTransport):
    """A StringTransport that behaves like a TCP transport where it matters:

    * ``loseConnection``/``abortConnection`` end the connection and call the
      protocol's ``connectionLost`` (once) on the next turn of the clock,
      never from inside the call, like the reactor's TCP transport;
    * ``loseWriteConnection`` shuts our side only: nothing more reaches the
      peer, but the connection stays up;
    * writes after the write side is shut are dropped, but recorded.
    """

    def __init__(self, clock: MemoryReactorClock) -> None:
        super().__init__(lenient=True)
        self.clock = clock
        self.protocol = None
        self.writeClosed = False
        self.aborted = False
        self.lostReason: Optional[Failure] = None
        self.lateWrites: List[bytes] = []

    def write(self, data: bytes) -> None:
        if self.writeClosed or self.disconnecting or not self.connected:
            self.lateWrites.append(data)
            return
        super().write(data)

    def writeSequence(self, seq) -> None:
        for data in seq:
            self.write(data)

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._lost(error.ConnectionDone("closed by the server"))

    def abortConnection(self) -> None:
        self.aborted = True
        self.disconnecting = True
        self.disconnected = True
        self._lost(error.ConnectionAborted("aborted by the server"))

    def _lost(self, exc: Exception) -> None:
        if self.lostReason is None:
            self.lostReason = Failure(exc)
            self.clock.callLater(0, self._deliverLost)

    def _deliverLost(self) -> None:
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(self.lostReason)


class Client:
    """One HTTP connection into the site, driven by hand."""

    def __init__(self, site, clock: MemoryReactorClock) -> None:
        self.site = site
        self.clock = clock
        self.proto = site.buildProtocol(None)
        self.transport = FakeTCP(clock)
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)

    def flush(self) -> None:
        """Let the reactor turn once without time passing (closes land)."""
        self.clock.advance(0)

    def send(self, data: bytes) -> "Client":
        self.proto.dataReceived(data)
        self.flush()
        return self

    def wire(self) -> bytes:
        return self.transport.value()

    def responses(self, head: bool = False) -> List[Response]:
        return parse_responses(self.wire(), head=head)

    def response(self) -> Response:
        """The one final (non-1xx) response on this connection."""
        final = [r for r in self.responses() if r.status >= 200]
        assert len(final) == 1, f"expected one response, wire: {self.wire()!r}"
        return final[0]

    def lines(self) -> List[str]:
        return self.response().lines

    # the peer's side of the TCP connection
    def disconnect(self) -> None:
        """The client goes away (what the reactor reports as ConnectionDone)."""
        assert self.transport.connected
        self.transport.connected = False
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.flush()

    def pause(self) -> None:
        """Our write buffer is full: what the TCP transport tells the channel."""
        self.proto.pauseProducing()
        self.flush()

    def resume(self) -> None:
        self.proto.resumeProducing()
        self.flush()

    @property
    def reading(self) -> str:
        """'producing' or 'paused': whether the server reads this connection."""
        return self.transport.producerState

    @property
    def open(self) -> bool:
        return self.transport.connected and not self.transport.disconnecting


def request(
    method: bytes,
    path: bytes,
    headers: Tuple[Tuple[bytes, bytes], ...] = (),
    body: Optional[bytes] = None,
    chunked: bool = False,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """Raw request bytes. ``chunked`` sends the head only (body follows with ``chunk``)."""
    lines = [method + b" " + path + b" " + version, b"Host: example.com"]
    lines += [name + b": " + value for name, value in headers]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    raw = CRLF.join(lines) + CRLF + CRLF
    if body is not None and not chunked:
        raw += body
    return raw


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; ``chunk(b"")`` is the last chunk."""
    if not data:
        return b"0\r\n\r\n"
    return b"%x\r\n" % len(data) + data + CRLF


@dataclass
class Env:
    clock: MemoryReactorClock
    site: object
    options: tap.Options
    errors: List[dict] = field(default_factory=list)

    @property
    def registry(self):
        return self.site.registry

    def client(self) -> Client:
        return Client(self.site, self.clock)

    def deadlineCalls(self) -> list:
        """Pending delayed calls that are some pipe's rendezvous deadline."""
        return [
            call
            for call in self.clock.getDelayedCalls()
            if getattr(call.func, "__func__", None) is Pipe._expire
        ]

    def assertClean(self) -> None:
        assert self.registry.pipes == {}
        assert self.registry.waiting() == 0
        # Every party that joined a pipe left it: no client keeps a place.
        assert self.registry.partiesByClient == {}
        assert self.deadlineCalls() == []
        assert self.errors == [], self.errors


def make_env(*argv: str) -> Env:
    options = tap.Options()
    options.parseOptions(list(argv))
    clock = MemoryReactorClock()
    return Env(clock, tap.makeSite(options, clock), options)


@pytest.fixture
def make_site() -> Iterator[Callable[..., Env]]:
    """Builds sites from command-line options (``make_site("--wait-timeout", "5")``).

    After the test, every registry must be empty, no deadline may be pending
    and nothing may have been logged as a failure.
    """
    created: List[Env] = []

    def observe(event: dict) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            for e in created:
                e.errors.append(event)

    def make(*argv: str) -> Env:
        e = make_env(*argv)
        created.append(e)
        return e

    globalLogPublisher.addObserver(observe)
    try:
        yield make
    finally:
        globalLogPublisher.removeObserver(observe)
    for e in created:
        e.assertClean()


@pytest.fixture
def env(make_site: Callable[..., Env]) -> Env:
    """A site with the default options (see ``make_site``)."""
    return make_site()
