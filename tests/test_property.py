"""Property-based tests: random and mutated requests against a site driven
in-process (``site.buildProtocol`` over a fake TCP transport, time on a
``MemoryReactorClock``).

Whatever the clients send, in whatever pieces, interleaved over several
connections with random pauses, disconnects and passing time:

* nothing is logged as a failure;
* what the server wrote on every connection is well-formed HTTP/1.1;
* once every connection is closed, the registry is empty and nobody counts
  as waiting.
"""

from __future__ import annotations

from typing import Any, List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abuse_support import FailureLog, parse_responses
from pipeserver.domain.pipe import State
from unit_support import Client, make_env

CRLF = b"\r\n"
PATHS = [b"/a", b"/a", b"/a", b"/b", b"/a?n=2", b"/b?n=2", b"/a?n=3"]
ODD_PATHS = [
    b"/",
    b"/help",
    b"/version",
    b"/favicon.ico",
    b"/%zz",
    b"/a?n=abc",
    b"/a?n=0",
    b"/a?n=-1",
    b"/a?n=300",
    b"/a?n=2&n=3",
    b"/a/",
    b"//a",
    b"*",
    b"http://x/a",
    b"/\xff\xfe",
    # The seed product's URL surface (issue 21).
    b"/api/v1/pipe/health",
    b"/api/v1/pipe/a",
    b"/Help/",
    b"/help%2e",
    b"/a?video",
    b"/a?progress",
    b"/api/v1/pipe/a?n=2&progress",
    b"/a?download=2",
    b"/a?n=2&filename=%E2%80%AE..%2F%00x",
]
METHODS = [b"GET"] * 4 + [b"PUT"] * 3 + [b"POST"] * 2 + [
    b"HEAD", b"OPTIONS", b"DELETE", b"PATCH", b"get", b"CONNECT"
]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.", b""]
BOUNDARY = b"XyZ"
EXTRA_HEADERS = [
    b"Expect: 100-continue",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Content-Type: text/html; charset=utf-8",
    b"Content-Type: multipart/form-data; boundary=" + BOUNDARY,
    b"Content-Type: multipart/form-data; boundary=",
    b'Content-Disposition: attachment; filename="x"',
    b"X-Piping: one",
    b"X-Piping: two",
    b"Content-Range: bytes 0-1/2",
    b"Service-Worker: script",
    b"Access-Control-Request-Private-Network: true",
    b"Authorization: Bearer nope",
    b"Transfer-Encoding: identity",
    b"Content-Length: 0",
    b"Content-Length: 3",
    b"Content-Length: -1",
    b"Cookie: a=b; c",
    b" folded-continuation",
    b"X-Long: " + b"v" * 3000,
]


def multipart(payload: bytes) -> bytes:
    return (
        b"--" + BOUNDARY + CRLF
        + b'Content-Disposition: form-data; name="input_file"; filename="f"' + CRLF
        + b"Content-Type: application/octet-stream" + CRLF + CRLF
        + payload + CRLF
        + b"--" + BOUNDARY + b"--" + CRLF
    )


@st.composite
def chunked(draw, body: bytes) -> bytes:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    out, last = [], 0
    for cut in cuts + [len(body)]:
        if cut > last:
            piece = body[last:cut]
            ext = draw(st.sampled_from([b"", b";ext=1"]))
            out.append(b"%x" % len(piece) + ext + CRLF + piece + CRLF)
        last = cut
    out.append(b"0" + CRLF + draw(st.sampled_from([b"", b"Trailer: x\r\n"])) + CRLF)
    return b"".join(out)


@st.composite
def requests(draw) -> bytes:
    """One request, mostly plausible, sometimes odd."""
    odd = draw(st.integers(0, 9)) == 0
    method = draw(st.binary(max_size=8) if odd else st.sampled_from(METHODS))
    path = draw(
        st.sampled_from(PATHS)
        | st.sampled_from(ODD_PATHS)
        | st.binary(max_size=12).map(lambda b: b"/" + b)
        if odd
        else st.sampled_from(PATHS)
    )
    version = draw(st.sampled_from(VERSIONS) if odd else st.just(b"HTTP/1.1"))
    lines = [b" ".join(x for x in (method, path, version) if x or draw(st.booleans()))]
    if not odd or draw(st.booleans()):
        lines.append(b"Host: example.com")
    lines += draw(st.lists(st.sampled_from(EXTRA_HEADERS), max_size=3 if odd else 1))
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.binary(max_size=30)))
    body = b""
    if method in (b"PUT", b"POST") or draw(st.integers(0, 5)) == 0:
        payload = draw(st.binary(max_size=300) | st.sampled_from([b"", b"x" * 70_000]))
        if draw(st.booleans()):
            payload = multipart(payload)
        framing = draw(st.sampled_from(["length", "chunked", "none", "wrong-length"]))
        if framing == "length":
            lines.append(b"Content-Length: %d" % len(payload))
            body = payload
        elif framing == "wrong-length":
            lines.append(b"Content-Length: %d" % draw(st.integers(0, 2 * len(payload) + 2)))
            body = payload
        elif framing == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = draw(chunked(payload))
    return CRLF.join(lines) + CRLF + CRLF + body


@st.composite
def mutated(draw, raw: bytes) -> bytes:
    """``raw`` with a few random edits."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "crlf"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
        elif kind == "crlf":
            data[at:at] = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n\r\n"]))
    return bytes(data)


@st.composite
def streams(draw) -> bytes:
    """What one connection sends: one or two requests (pipelined), each
    valid, odd or mutated, maybe truncated at a random point."""
    raw = b"".join(draw(st.lists(requests(), min_size=1, max_size=2)))
    if draw(st.integers(0, 3)) == 0:
        raw = draw(mutated(raw))
    if draw(st.integers(0, 5)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


def well_formed(client: Client, sent: bytes) -> None:
    """Everything the server wrote parses as HTTP responses (after a HEAD,
    whose Content-Length has no body, only the first status line is read)."""
    wire = client.wire()
    if not wire:
        return
    if b"HEAD" in sent.upper():
        assert wire.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), wire[:100]
        return
    for response in parse_responses(wire):
        assert 100 <= response.status < 600, response.status


def check_invariants(env) -> None:
    """No pipe holds a party whose connection is gone, and the waiting
    count is the number of parties in pipes still waiting."""
    waiting = 0
    for pipe in env.registry.pipes.values():
        parties = ([pipe.sender] if pipe.sender is not None else []) + list(pipe.receivers)
        for party in parties:
            assert party.transport.connected, f"a gone party is still in {pipe.key}"
        if pipe.state is State.WAITING:
            waiting += len(parties)
    assert env.registry.waiting() == waiting


def run_script(data, streams_: List[bytes], options: List[str]) -> None:
    env = make_env(*options)
    clients = [env.client() for _ in streams_]
    offsets = [0] * len(streams_)
    # Like a TCP transport, pause a channel only when it runs, resume only
    # when paused (a spurious resume would restart a paused upload).
    full = [False] * len(streams_)
    with FailureLog() as failures:
        for _ in range(data.draw(st.integers(0, 40), label="steps")):
            i = data.draw(st.integers(0, len(clients) - 1), label="connection")
            c = clients[i]
            action = data.draw(
                st.sampled_from(["send"] * 6 + ["pause", "resume", "time", "close"]),
                label="action",
            )
            if action == "send" and c.open and offsets[i] < len(streams_[i]):
                size = data.draw(st.integers(1, max(1, len(streams_[i]) - offsets[i])), label="piece")
                piece = streams_[i][offsets[i] : offsets[i] + size]
                offsets[i] += size
                # A paused transport gets no data (the reactor stops reading).
                if c.transport.producerState == "producing":
                    c.send(piece)
                else:
                    offsets[i] -= size
            elif action == "pause" and c.open and not full[i]:
                full[i] = True
                c.pause()
            elif action == "resume" and c.open and full[i]:
                full[i] = False
                c.resume()
            elif action == "time":
                env.clock.advance(data.draw(st.sampled_from([0.0, 0.0, 0.5, 0.5, 3.0, 25.0]), label="advance"))
            elif action == "close" and c.transport.connected:
                c.disconnect()
            check_invariants(env)
        # Everyone who is left drains and sends the rest (a sender paused
        # while it waits is read once its receivers are in), then hangs up.
        for i, c in enumerate(clients):
            if c.open and full[i]:
                full[i] = False
                c.resume()
        for _ in range(len(clients)):
            for i, c in enumerate(clients):
                if c.open and c.transport.producerState == "producing" and offsets[i] < len(streams_[i]):
                    c.send(streams_[i][offsets[i] :])
                    offsets[i] = len(streams_[i])
        for i, c in enumerate(clients):
            well_formed(c, streams_[i])
        check_invariants(env)
        for i in data.draw(st.permutations(range(len(clients))), label="hang-up order"):
            if clients[i].transport.connected:
                clients[i].disconnect()
            check_invariants(env)
        env.clock.advance(0)
        assert env.registry.pipes == {}, sorted(env.registry.pipes)
        site: Any = env.site
        assert site.resource.spectators.total == 0
        assert env.registry.waiting() == 0
        assert env.registry.waitingByProject == {}
        # Pending timers (grace cuts, header timeouts) fire without trouble.
        for _ in range(5):
            env.clock.advance(30)
        assert env.registry.pipes == {}
    assert failures.events == [], failures.describe()


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(st.lists(streams(), min_size=1, max_size=4), st.data())
def test_random_requests(streams_, data):
    run_script(data, streams_, ["--wait-timeout", "60", "--header-timeout", "5"])


@st.composite
def pair_streams(draw) -> List[bytes]:
    """A valid sender and its receivers on one path, some of them mutated
    or truncated: mostly-sane traffic that gets deep into the pipe."""
    path = draw(st.sampled_from([b"/a", b"/a?n=2"]))
    n = 2 if path.endswith(b"n=2") else 1
    payload = draw(st.binary(max_size=2000) | st.just(b"z" * 100_000))
    kind = draw(st.sampled_from(["length", "chunked", "form"]))
    head = [b"PUT " + path + b" HTTP/1.1", b"Host: x"]
    if kind == "form":
        payload = multipart(payload)
        head.append(b"Content-Type: multipart/form-data; boundary=" + BOUNDARY)
    if kind == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        body = draw(chunked(payload))
    else:
        head.append(b"Content-Length: %d" % len(payload))
        body = payload
    sender = CRLF.join(head) + CRLF + CRLF + body
    receivers = [b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(n)]
    out = []
    for raw in [sender] + receivers:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            raw = draw(mutated(raw))
        elif choice == 1:
            raw = raw[: draw(st.integers(0, len(raw)))]
        out.append(raw)
    return draw(st.permutations(out))


@SETTINGS
@given(pair_streams(), st.data())
def test_mutated_pairs(streams_, data):
    run_script(data, streams_, ["--wait-timeout", "60", "--header-timeout", "5"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair_streams(), st.data())
def test_mutated_pairs_with_tokens(tmp_path_factory, streams_, data):
    from pipeserver.web.tokens import hash_token

    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(f"p {hash_token('t')}\n")
    auth = b"\r\nAuthorization: Bearer t\r\n"
    streams_ = [s.replace(b"\r\nHost: x\r\n", auth, 1) for s in streams_]
    run_script(data, streams_, ["--tokens", str(path), "--max-waiting-per-project", "2"])
