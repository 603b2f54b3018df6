"""SPEC §3-§9 per stream over HTTP/2 (SPEC §11, issue 12 item 2): the same
statuses, texts and headers as HTTP/1.1 (tests/test_integration_errors.py,
_pages.py, _headers.py, _faults.py, _limits.py), with lower-case header names
and no connection-specific header. Many requests share one connection."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import defer

import pipeserver
from pipeserver import errors
from h2_support import h2clients  # noqa: F401  (fixture)
from helpers import wait_for

SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'"
RESERVED = ["/", "/noscript", "/help", "/version", "/favicon.ico", "/robots.txt"]
CONNECTION_SPECIFIC = {"connection", "transfer-encoding", "keep-alive", "upgrade", "proxy-connection"}


def assert_h2_headers(stream) -> None:
    """Every header name lower-case, none connection-specific, and the
    hardening headers on every response."""
    names = stream.names()
    assert names == [n.lower() for n in names], names
    assert not CONNECTION_SPECIFIC & set(names), names
    assert stream.values("server") == ["pipeserver"], stream.describe()
    assert stream.values("x-content-type-options") == ["nosniff"], stream.describe()


def assert_rejected(stream, text: str, status: int = 400) -> None:
    assert stream.status == status, stream.describe()
    # A response that ended may be followed by RST_STREAM(NO_ERROR) when
    # the server does not want the rest of the request body (RFC 9113 8.1).
    assert stream.ended and stream.reset in (None, 0), stream.describe()
    assert stream.one("content-type") == "text/plain", stream.describe()
    assert stream.one("access-control-allow-origin") == "*", stream.describe()
    assert stream.body == (text + "\n").encode(), stream.describe()
    assert_h2_headers(stream)


@defer.inlineCallbacks
def finish(client, *streams):
    for stream in streams:
        yield stream.wait(15.0)


@pytest_twisted.inlineCallbacks
def test_rejections_of_section_6(server, h2clients):
    client = yield h2clients.h2c(server.portnum)
    cases = []
    for method in ("PUT", "POST"):
        for path in RESERVED:
            cases.append((client.request(method, path, body=b"hello"),
                          f"[ERROR] Cannot send to the reserved path '{path}'. (e.g. '/mypath123')", 400))
        cases.append((client.request(method, "/p", body=b"abcd", headers=[("content-range", "bytes 0-3/4")]),
                      f"[ERROR] Content-Range is not supported for now in {method}", 400))
    for value in ("abc", "1.5", ""):
        cases.append((client.put("/p?n=" + value, b"x"), '[ERROR] Invalid "n" query parameter\nn is the number of receivers, a whole number from 1 to 256: e.g. ?n=2', 400))
        cases.append((client.get("/p?n=" + value), '[ERROR] Invalid query parameter "n"\nn is the number of receivers, a whole number from 1 to 256: e.g. ?n=2', 400))
    for method in ("PUT", "GET"):
        body = b"x" if method == "PUT" else None
        cases.append((client.request(method, "/p?n=0", body=body), "[ERROR] n should > 0, but n = 0.", 400))
        cases.append((client.request(method, "/p?n=300", body=body),
                      "[ERROR] n should be at most 256, but n = 300.", 400))
    cases.append((client.get("/sw.js", headers=[("service-worker", "script")]),
                  "[ERROR] Service Worker registration is rejected.", 400))
    for method in ("DELETE", "PATCH"):
        cases.append((client.request(method, "/p"), f"[ERROR] Unsupported method: {method}.", 405))
    for stream, text, status in cases:
        yield stream.wait()
        assert_rejected(stream, text, status)
    for stream, text, status in cases:
        if status == 405:
            assert stream.one("allow") == "GET, HEAD, POST, PUT, OPTIONS"
    assert not server.registry.pipes
    client.close()
    yield client.wait_closed()


@pytest_twisted.inlineCallbacks
def test_rejections_of_a_pipe_in_use(server, h2clients):
    client = yield h2clients.h2c(server.portnum)
    waiting = client.get("/p?n=2")
    yield server.wait_receivers("/p", 1)
    mismatch_get = client.get("/p?n=3")
    mismatch_put = client.put("/p?n=3", b"x")
    default = client.get("/p")
    yield finish(client, mismatch_get, mismatch_put, default)
    assert_rejected(mismatch_get, "[ERROR] The number of receivers should be 2 but 3.\nThe pipe on '/p' is for 2 receiver(s): use ?n=2 in your URL.")
    assert_rejected(mismatch_put, "[ERROR] The number of receivers should be 2 but 3.\nThe pipe on '/p' is for 2 receiver(s): use ?n=2 in your URL.")
    assert_rejected(default, "[ERROR] The number of receivers should be 2 but 1.\nThe pipe on '/p' is for 2 receiver(s): add ?n=2 to your URL (without ?n, n is 1).")
    second = client.get("/p?n=2")
    yield server.wait_receivers("/p", 2)
    third = client.get("/p?n=2")
    yield third.wait()
    assert_rejected(third, "[ERROR] The number of receivers has reached limits.\n" + errors.RECEIVERS_FULL_HINT)
    # A sender with an open body; a second sender is refused.
    sender = client.put("/p?n=2", b"first part ", end=False)
    yield wait_for(lambda: waiting.nbytes >= 11 and second.nbytes >= 11, what="the first part")
    intruder = client.put("/p?n=2", b"intruder")
    late = client.get("/p?n=2")
    yield finish(client, intruder, late)
    assert_rejected(intruder, "[ERROR] Connection on '/p' has been established already.")
    assert_rejected(late, "[ERROR] Connection on '/p' has been established already.")
    sender.send(b"and the rest")
    sender.end()
    yield finish(client, waiting, second, sender)
    for receiver in (waiting, second):
        assert receiver.status == 200 and receiver.ended, receiver.describe()
        assert receiver.body == b"first part and the rest"
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    # Another sender while one waits for its receiver.
    lonely = client.put("/q", b"body", end=True)
    yield server.wait_sender("/q")
    other = client.request("POST", "/q", body=b"intruder")
    yield other.wait()
    assert_rejected(other, "[ERROR] Another sender has been connected on '/q'.\n" + errors.SECOND_SENDER_HINT)
    receiver = client.get("/q")
    yield finish(client, receiver, lonely)
    assert receiver.body == b"body"
    client.close()
    yield client.wait_closed()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_progress_lines_stream_as_they_happen(server, h2clients):
    """Sender first: each line arrives on the sender's stream when it
    happens, before the next step of the test (n=2)."""
    client = yield h2clients.h2c(server.portnum)
    sender = client.put("/lines?n=2", b"", end=False)
    yield wait_for(lambda: sender.lines() == ["[INFO] Waiting for 2 receiver(s)..."],
                   what="the first line")
    assert sender.status == 200 and sender.one("content-type") == "text/plain", sender.describe()
    assert_h2_headers(sender)
    first = client.get("/lines?n=2")
    yield wait_for(lambda: len(sender.lines()) == 2, what="the second line")
    assert sender.lines()[1] == "[INFO] A receiver was connected."
    second = client.get("/lines?n=2")
    yield wait_for(lambda: len(sender.lines()) == 4, what="the start")
    assert sender.lines()[2:] == ["[INFO] A receiver was connected.",
                                  "[INFO] Start sending to 2 receiver(s)!"]
    sender.send(b"hello")
    sender.end()
    yield finish(client, sender, first, second)
    assert sender.lines()[4:] == ["[INFO] Sent successfully!",
                                  "[INFO] All receiver(s) was/were received successfully."]
    assert first.body == second.body == b"hello"
    client.close()
    yield client.wait_closed()


@pytest_twisted.inlineCallbacks
def test_receiver_headers(server, h2clients):
    client = yield h2clients.h2c(server.portnum)
    receiver = client.get("/p")
    yield server.wait_receivers("/p", 1)
    payload = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    sender = client.put("/p", payload, headers=[
        ("content-type", "image/svg+xml"), ("x-piping", "one"),
        ("content-disposition", "inline"), ("content-length", str(len(payload))),
        ("x-other", "not passed on"),
    ])
    yield finish(client, receiver, sender)
    assert receiver.body == payload
    assert [(n, v) for n, v in receiver.headers if n != "date"] == [
        ("server", "pipeserver"),
        ("content-length", str(len(payload))),
        ("content-type", "image/svg+xml"),
        ("content-disposition", "inline"),
        ("x-piping", "one"),
        ("access-control-allow-origin", "*"),
        ("access-control-expose-headers", "X-Piping"),
        ("x-robots-tag", "none"),
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", SANDBOX),
    ], receiver.headers
    assert_h2_headers(sender)
    assert sender.values("content-security-policy") == [SANDBOX]
    # text/html is served as text/plain; chunked has no h2 form: no length.
    receiver = client.get("/h")
    yield server.wait_receivers("/h", 1)
    sender = client.put("/h", b"<script>alert(1)</script>", headers=[("content-type", "text/html; charset=utf-8")])
    yield finish(client, receiver, sender)
    assert receiver.one("content-type") == "text/plain; charset=utf-8"
    assert receiver.one("content-length") is None
    assert_h2_headers(receiver)
    client.close()
    yield client.wait_closed()


@pytest_twisted.inlineCallbacks
def test_reserved_pages_and_options(server, h2clients):
    client = yield h2clients.h2c(server.portnum)
    version = client.get("/version")
    index = client.get("/")
    helped = client.get("/help")
    favicon = client.get("/favicon.ico")
    robots = client.get("/robots.txt")
    head = client.request("HEAD", "/version")
    options = client.request("OPTIONS", "/mypath", headers=[
        ("origin", "https://a.example"), ("access-control-request-method", "PUT")])
    yield finish(client, version, index, helped, favicon, robots, head, options)
    assert (version.status, version.body) == (200, (pipeserver.__version__ + "\n").encode())
    assert version.one("content-type") == "text/plain"
    assert index.status == 200 and b"<html" in index.body.lower() and b"/mypath" in index.body
    assert helped.status == 200
    base = f"http://127.0.0.1:{server.portnum}"  # :authority stands for Host
    assert f"curl {base}/mypath\n" in helped.text, helped.text
    assert f"curl -T - {base}/mypath\n" in helped.text
    assert favicon.status == 204 and favicon.body == b""
    assert robots.status == 404
    assert head.status == 200 and head.body == b"" and head.ended
    assert head.one("content-type") == "text/plain"
    assert options.status == 200 and options.body == b""
    assert [(n, v) for n, v in options.headers if n.startswith("access-control")] == [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET, HEAD, POST, PUT, OPTIONS"),
        ("access-control-allow-headers", "Content-Type, Content-Disposition, X-Piping"),
        ("access-control-expose-headers", "Access-Control-Allow-Headers"),
        ("access-control-max-age", "86400"),
    ]
    for stream in (version, index, helped, favicon, robots, head, options):
        assert stream.ended and stream.reset is None, stream.describe()
        assert_h2_headers(stream)
    assert not server.registry.pipes
    client.close()
    yield client.wait_closed()


@pytest_twisted.inlineCallbacks
def test_503_when_the_client_has_too_many_waiting(make_server, h2clients):
    server = make_server("--max-waiting-per-client", "2")
    client = yield h2clients.h2c(server.portnum)
    a, b = client.get("/w1"), client.get("/w2")
    yield server.wait_receivers("/w1", 1)
    yield server.wait_receivers("/w2", 1)
    over = client.get("/w3")
    yield over.wait()
    assert_rejected(over, "[ERROR] Too many parties from your address are waiting or transferring.", 503)
    assert over.one("retry-after") == "5"
    # The rejected stream did not take the connection with it.
    assert not a.finished and not b.finished
    a.reset_stream()
    b.reset_stream()
    yield server.wait_empty()
    client.close()
    yield client.wait_closed()


@pytest_twisted.inlineCallbacks
def test_rendezvous_deadline_per_stream(make_server, h2clients):
    server = make_server("--wait-timeout", "1")
    client = yield h2clients.h2c(server.portnum)
    receiver = client.get("/p")
    yield receiver.wait()
    assert_rejected(receiver, "[ERROR] No sender arrived on '/p' within 1 seconds.", 504)
    # A waiting sender: its line, then a stream that does not end cleanly.
    sender = client.put("/s", b"x" * 1000, end=False)
    yield sender.wait()
    assert sender.status == 200, sender.describe()
    assert sender.text == (
        "[INFO] Waiting for 1 receiver(s)...\n"
        "[ERROR] Not all receivers arrived on '/s' within 1 seconds.\n"
    ), sender.describe()
    assert sender.reset is not None and not sender.ended, sender.describe()
    # The connection carries on.
    version = client.get("/version")
    yield version.wait()
    assert version.status == 200
    assert not server.registry.pipes
    client.close()
    yield client.wait_closed()


@pytest_twisted.inlineCallbacks
def test_receiver_first_and_sender_first_lines(server, h2clients):
    data = os.urandom(300_000)
    client = yield h2clients.h2c(server.portnum)
    receiver = client.get("/r")
    yield server.wait_receivers("/r", 1)
    sender = client.put("/r", data)
    yield finish(client, receiver, sender)
    assert receiver.body == data
    assert sender.lines() == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] 1 receiver(s) has/have been connected.",
        "[INFO] Start sending to 1 receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    sender = client.request("POST", "/s?n=3", body=data)
    yield server.wait_sender("/s")
    receivers = [client.get("/s?n=3") for _ in range(3)]
    yield finish(client, sender, *receivers)
    assert all(r.body == data and r.ended for r in receivers)
    assert sender.lines() == [
        "[INFO] Waiting for 3 receiver(s)...",
        "[INFO] A receiver was connected.",
        "[INFO] A receiver was connected.",
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 3 receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    client.close()
    yield client.wait_closed()


@pytest_twisted.inlineCallbacks
def test_tokens_per_stream(make_server, h2clients, tmp_path):
    import hashlib

    token_a, token_b = "alpha-token-for-the-h2-test", "beta-token-for-the-h2-test"
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(
        f"{project} {hashlib.sha256(token.encode()).hexdigest()}\n"
        for project, token in (("alpha", token_a), ("beta", token_b))
    ))
    server = make_server("--tokens", str(tokens))
    client = yield h2clients.h2c(server.portnum)
    missing = client.get("/p")
    wrong = client.put("/p", b"x", headers=[("authorization", "Bearer nope")])
    yield finish(client, missing, wrong)
    for stream in (missing, wrong):
        assert_rejected(stream, "[ERROR] Missing or invalid token.\nPass your project's token: curl -H 'Authorization: Bearer TOKEN' URL (or curl -u x:TOKEN URL).", 401)
        assert stream.one("www-authenticate") == 'Bearer realm="pipe"'
    # The same path in two projects: two pipes, on one connection.
    ra = client.get("/p", headers=[("authorization", f"Bearer {token_a}")])
    rb = client.get("/p", headers=[("authorization", f"Bearer {token_b}")])
    yield wait_for(lambda: len(server.registry.pipes) == 2, what="two pipes")
    sb = client.put("/p", b"for beta", headers=[("authorization", f"Bearer {token_b}")])
    sa = client.put("/p", b"for alpha", headers=[("authorization", f"Bearer {token_a}")])
    yield finish(client, ra, rb, sa, sb)
    assert (ra.body, rb.body) == (b"for alpha", b"for beta")
    assert sa.lines()[-1] == sb.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    client.close()
    yield client.wait_closed()
