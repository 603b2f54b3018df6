# mypy: disable-error-code="arg-type,comparison-overlap"
"""The typed wiring (tap.Server) and the one error builder (errors.py)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.internet.testing import MemoryReactorClock

from pipeserver import errors
from pipeserver.ops import tap
from pipeserver.ops.metrics import PipeMetrics
from pipeserver.web.tokens import Tokens


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


# ------------------------------------------------------------ the wiring
def test_makeService_holds_one_server_whose_parts_are_wired_together(tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    reactor = MemoryReactorClock()
    service = tap.makeService(
        parse("--tokens", str(tokens), "--metrics-listen", "tcp:9100"), reactor
    )
    server = service.server
    assert isinstance(server, tap.Server)
    assert server.reactor is reactor
    assert server.site is service.site
    assert server.metricsSite is service.metricsSite is not None
    assert isinstance(server.tokens, Tokens) and isinstance(server.metrics, PipeMetrics)
    # The resource, the site and the registry share the same parts.
    assert server.resource is server.site.resource
    assert server.resource.registry is server.registry is server.site.registry
    assert server.resource.authorize is server.tokens is server.site.tokens
    # ?progress's spectators hear the registry first and pass it all on to metrics.
    assert server.registry.observer is server.resource.spectators
    assert server.resource.spectators.next is server.metrics is server.site.metrics
    # The service that drains the registry holds the same server.
    (pipes,) = [child for child in service if isinstance(child, tap.PipeService)]
    assert pipes.server is server and pipes.reactor is reactor


def test_makeServer_without_tokens_or_metrics() -> None:
    server = tap.makeServer(parse(), MemoryReactorClock(), fds=4096)
    assert server.tokens is None and server.metrics is None and server.metricsSite is None
    assert server.fds == 4096
    assert server.site.tokens is None and server.site.metrics is None


# ------------------------------------------------------------ the error builder
class FakeRequest:
    """What errors.plain_reply needs of a request (interfaces.Replying)."""

    def __init__(self) -> None:
        self.code: Optional[int] = None
        self.headers: Dict[bytes, bytes] = {}
        self.order: List[bytes] = []

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value
        self.order.append(name)


def test_plain_reply_sets_status_the_text_plain_and_cors_pair_headers_and_length() -> None:
    request = FakeRequest()
    body = errors.plain_reply(request, 503, "[ERROR] Busy.", [("Retry-After", "5")])
    assert body == b"[ERROR] Busy.\n"
    assert request.code == 503
    assert request.headers == {
        b"content-type": b"text/plain",
        b"access-control-allow-origin": b"*",
        b"Retry-After": b"5",
        b"content-length": b"14",
    }
    assert request.order[-1] == b"content-length"


def test_a_rejection_applies_itself_with_its_extra_headers() -> None:
    request = FakeRequest()
    rejection = errors.unauthorized()
    assert rejection.apply(request) == rejection.body == b"[ERROR] Missing or invalid token.\nPass your project's token: curl -H 'Authorization: Bearer TOKEN' URL (or curl -u x:TOKEN URL).\n"
    assert request.code == 401
    assert request.headers[b"WWW-Authenticate"] == b'Bearer realm="pipe"'
    assert request.headers[b"content-length"] == b"%d" % len(rejection.body)


def _wire(status: bytes, text: str, extra: Tuple[bytes, ...] = ()) -> bytes:
    body = text.encode() + b"\n"
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: text/plain\r\n"
        b"Access-Control-Allow-Origin: *\r\n"
        + b"".join(line + b"\r\n" for line in extra)
        + b"Server: pipeserver\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"Content-Security-Policy: sandbox; default-src 'none'; style-src 'unsafe-inline'\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


def test_the_channels_raw_replies_byte_for_byte() -> None:
    assert errors.header_timeout().wire() == _wire(
        b"408 Request Timeout", "[ERROR] Request headers took too long."
    )
    assert errors.headers_too_large().wire() == _wire(
        b"431 Request Header Fields Too Large", "[ERROR] Request headers are too large."
    )
    assert errors.malformed().wire() == _wire(b"400 Bad Request", "[ERROR] Malformed request.")
    assert errors.expectation_failed().wire() == _wire(
        b"417 Expectation Failed", "[ERROR] The only expectation supported is 100-continue."
    )
    assert errors.over_limit("Full.").wire() == _wire(
        b"503 Service Unavailable", "[ERROR] Full.", (b"Retry-After: 5",)
    )


def test_the_raw_replies_are_named_for_the_rejection_metric() -> None:
    # channel.py counts them by these reasons.
    assert [r().reason for r in (errors.header_timeout, errors.headers_too_large, errors.malformed)] == [
        "header_timeout", "headers_too_large", "malformed"]
