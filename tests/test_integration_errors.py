# mypy: disable-error-code="arg-type"
"""Every rejection of SPEC §6 that applies without tokens or limits, over a
real socket: exact status, Content-Type, CORS header and text."""

from __future__ import annotations

import pytest
import pytest_twisted

from pipeserver import errors

from helpers import curl, gated, has_received, http, make_file, open_gate

RESERVED = ["/", "/noscript", "/help", "/version", "/favicon.ico", "/robots.txt"]


def assert_rejected(reply, text, status=400):
    assert reply.code == status, (reply.code, reply.body)
    assert reply.one("Content-Type") == "text/plain"
    assert reply.one("Access-Control-Allow-Origin") == "*"
    assert reply.body == (text + "\n").encode()


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("path", RESERVED)
@pytest_twisted.inlineCallbacks
def test_send_to_reserved_path(server, method, path):
    reply = yield http(method, server.url(path), data=b"hello")
    assert_rejected(
        reply, f"[ERROR] Cannot send to the reserved path '{path}'. (e.g. '/mypath123')"
    )
    assert not server.registry.pipes


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest_twisted.inlineCallbacks
def test_content_range(server, method):
    reply = yield http(
        method, server.url("/p"), data=b"abcd", headers={"Content-Range": "bytes 0-3/4"}
    )
    assert_rejected(reply, f"[ERROR] Content-Range is not supported for now in {method}")
    assert not server.registry.pipes


@pytest.mark.parametrize("value", ["abc", "1.5", "", "0x2", "1e2"])
@pytest_twisted.inlineCallbacks
def test_invalid_n(server, value):
    # SPEC's exact sentence first (clients match it), then an example.
    url = server.url("/p?n=" + value)
    sent = yield http("PUT", url, data=b"hello")
    assert_rejected(
        sent,
        '[ERROR] Invalid "n" query parameter\n'
        "n is the number of receivers, a whole number from 1 to 256: e.g. ?n=2",
    )
    received = yield http("GET", url)
    assert_rejected(
        received,
        '[ERROR] Invalid query parameter "n"\n'
        "n is the number of receivers, a whole number from 1 to 256: e.g. ?n=2",
    )
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_invalid_n_hint_names_the_configured_limit(make_server):
    server = make_server("--max-receivers", "5")
    reply = yield http("GET", server.url("/p?n=two"))
    assert_rejected(
        reply,
        '[ERROR] Invalid query parameter "n"\n'
        "n is the number of receivers, a whole number from 1 to 5: e.g. ?n=2",
    )


@pytest.mark.parametrize("n", ["0", "-1"])
@pytest_twisted.inlineCallbacks
def test_n_not_positive(server, n):
    for method in ("PUT", "POST", "GET"):
        reply = yield http(method, server.url("/p?n=" + n), data=b"x" if method != "GET" else None)
        assert_rejected(reply, f"[ERROR] n should > 0, but n = {n}.")
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_n_above_default_max(server):
    for method in ("PUT", "GET"):
        reply = yield http(method, server.url("/p?n=300"), data=b"x" if method == "PUT" else None)
        assert_rejected(reply, "[ERROR] n should be at most 256, but n = 300.")
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_n_above_configured_max(make_server):
    server = make_server("--max-receivers", "5")
    for method in ("PUT", "GET"):
        reply = yield http(method, server.url("/p?n=6"), data=b"x" if method == "PUT" else None)
        assert_rejected(reply, "[ERROR] n should be at most 5, but n = 6.")
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_established_already(server, procs, tmp_path):
    first, rest = str(tmp_path / "first"), str(tmp_path / "rest")
    make_file(first, 100_000, seed=1)
    make_file(rest, 1000, seed=2)
    gate = str(tmp_path / "gate")
    url = server.url("/p")
    _gen, sender = procs.pipeline(gated(first, gate, rest), curl("-T", "-", url))
    receiver = procs.spawn(curl(url), name="receiver", keep=False)
    yield has_received(receiver, 100_000)
    for method in ("GET", "PUT", "POST"):
        reply = yield http(method, url, data=b"x" if method != "GET" else None)
        assert_rejected(reply, "[ERROR] Connection on '/p' has been established already.")
    open_gate(gate)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0 and receiver.nbytes == 101_000, receiver.describe()
    assert sender.exit_code == 0, sender.describe()


@pytest_twisted.inlineCallbacks
def test_second_sender(server, procs, tmp_path):
    src = str(tmp_path / "src")
    expected = make_file(src, 200_000)
    url = server.url("/p")
    sender = procs.spawn(curl("-T", src, url), name="sender")
    yield server.wait_sender("/p")
    for method in ("PUT", "POST"):
        reply = yield http(method, url, data=b"intruder")
        assert_rejected(reply, "[ERROR] Another sender has been connected on '/p'.\n" + errors.SECOND_SENDER_HINT)
    receiver = procs.spawn(curl(url), name="receiver", keep=False)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    assert sender.exit_code == 0, sender.describe()


@pytest_twisted.inlineCallbacks
def test_n_mismatch(server, procs):
    waiting = procs.spawn(curl(server.url("/p?n=2")), name="receiver")
    yield server.wait_receivers("/p", 1)
    other_n = (
        "[ERROR] The number of receivers should be 2 but 3.\n"
        "The pipe on '/p' is for 2 receiver(s): use ?n=2 in your URL."
    )
    without_n = (
        "[ERROR] The number of receivers should be 2 but 1.\n"
        "The pipe on '/p' is for 2 receiver(s): add ?n=2 to your URL (without ?n, n is 1)."
    )
    get = yield http("GET", server.url("/p?n=3"))
    assert_rejected(get, other_n)
    put = yield http("PUT", server.url("/p?n=3"), data=b"x")
    assert_rejected(put, other_n)
    default = yield http("GET", server.url("/p"))
    assert_rejected(default, without_n)
    sender = yield http("PUT", server.url("/p"), data=b"x")
    assert_rejected(sender, without_n)
    assert len(server.pipe("/p").receivers) == 1
    waiting.kill()
    yield waiting.wait()
    yield server.wait_gone("/p")


@pytest_twisted.inlineCallbacks
def test_receivers_beyond_k(server, procs):
    waiting = [procs.spawn(curl(server.url("/p?n=2")), name=f"r{i}") for i in range(2)]
    yield server.wait_receivers("/p", 2)
    reply = yield http("GET", server.url("/p?n=2"))
    assert_rejected(reply, "[ERROR] The number of receivers has reached limits.\n" + errors.RECEIVERS_FULL_HINT)
    for proc in waiting:
        proc.kill()
        yield proc.wait()
    yield server.wait_gone("/p")


@pytest_twisted.inlineCallbacks
def test_service_worker(server):
    reply = yield http("GET", server.url("/sw.js"), headers={"Service-Worker": "script"})
    assert_rejected(reply, "[ERROR] Service Worker registration is rejected.")
    assert not server.registry.pipes


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "TRACE"])
@pytest_twisted.inlineCallbacks
def test_unsupported_method(server, method):
    reply = yield http(method, server.url("/p"))
    assert_rejected(reply, f"[ERROR] Unsupported method: {method}.", status=405)
    assert reply.one("Allow") == "GET, HEAD, POST, PUT, OPTIONS"
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_n_with_more_digits_than_int_takes(server):
    """Past 4,300 digits int() raises; such an n is a number above the
    limit (or below 1), and its text shows 20 digits and the count."""
    big = "12345678901234567890" + "7" * 4981
    for method in ("PUT", "POST", "GET"):
        data = b"x" if method != "GET" else None
        reply = yield http(method, server.url("/p?n=" + big), data=data)
        assert_rejected(
            reply, "[ERROR] n should be at most 256, but n = 12345678901234567890... (5001 digits)."
        )
        reply = yield http(method, server.url("/p?n=-" + big), data=data)
        assert_rejected(
            reply, "[ERROR] n should > 0, but n = -12345678901234567890... (5001 digits)."
        )
        reply = yield http(method, server.url("/p?n=" + "0" * 5000), data=data)
        assert_rejected(reply, "[ERROR] n should > 0, but n = 0.")
    # Leading zeros are no digits: this is n = 2.
    reply = yield http("HEAD", server.url("/p?n=" + "0" * 5000 + "2"))
    assert reply.code == 200
    assert not server.registry.pipes


@pytest.fixture
def failures():
    """Failures logged while the test runs."""
    from twisted.logger import globalLogPublisher

    events = []

    def observe(event):
        if event.get("log_failure") is not None:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.inlineCallbacks
def test_an_unexpected_error_is_a_plain_500_logged_once(server, procs, monkeypatch, failures, tmp_path):
    """Never Twisted's HTML "Processing Failed" page: one [ERROR] line with
    CORS, and the traceback in the log once per request."""

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.registry, "receive", broken)
    monkeypatch.setattr(server.registry, "send", broken)
    reply = yield http("GET", server.url("/p"))
    assert_rejected(reply, "[ERROR] Internal server error.", status=500)
    assert reply.one("X-Content-Type-Options") == "nosniff"
    assert len(failures) == 1
    assert failures[0]["log_failure"].value.args == ("a bug",)
    # A sender whose body streams (chunked, from stdin) gets the same.
    path = tmp_path / "body"
    make_file(str(path), 200_000)
    sender = procs.spawn(curl("-i", "-T", "-", server.url("/p")), stdin=str(path))
    yield sender.wait()
    assert sender.exit_code == 0, sender.describe()
    assert sender.text.startswith(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal Server Error\r\n"
    )
    assert "\r\nContent-Type: text/plain\r\n" in sender.text
    assert "\r\nAccess-Control-Allow-Origin: *\r\n" in sender.text
    assert sender.text.endswith("\r\n\r\n[ERROR] Internal server error.\n")
    assert len(failures) == 2
    assert not server.registry.pipes
