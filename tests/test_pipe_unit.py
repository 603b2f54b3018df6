"""Unit tests of the pipe, end to end through the HTTP layer, without sockets.

Every connection is a ``FakeTCP`` transport on a ``PipeChannel`` built by the
real Site (``tap.makeSite``) on a ``MemoryReactorClock``; the clock drives
the rendezvous deadline, the idle timeouts and the close grace. After each
test the registry must be empty (``make_site`` fixture in unit_support).
"""

from __future__ import annotations

from typing import Any, List, Tuple, cast

import pytest

from pipeserver import errors
from pipeserver.http.parties import CLOSE_GRACE
from unit_support import (  # noqa: F401  (fixtures)
    Client,
    Env,
    chunk,
    env,
    make_site,
    request,
)

WAIT = 300.0
TEXT_PLAIN = b"text/plain"

NO_SENDER = "[ERROR] No sender arrived on '/p' within 300 seconds."
NOT_ALL = "[ERROR] Not all receivers arrived on '/p' within 300 seconds."


# --------------------------------------------------------------- helpers
def sender(env: Env, path: bytes = b"/p", n: int = 1, headers=(), first: bytes = b"",
           expect: bool = False) -> Client:
    """A chunked PUT whose body is still arriving; ``first`` rides with the head."""
    hdrs = tuple(headers)
    if expect:
        hdrs += ((b"Expect", b"100-continue"),)
    target = path if n == 1 else path + b"?n=%d" % n
    raw = request(b"PUT", target, hdrs, chunked=True)
    if first:
        raw += chunk(first)
    return env.client().send(raw)


def receiver(env: Env, path: bytes = b"/p", n: int = 1, headers=()) -> Client:
    target = path if n == 1 else path + b"?n=%d" % n
    return env.client().send(request(b"GET", target, tuple(headers)))


def sender_lines(client: Client) -> List[str]:
    return client.response().lines


def assert_rejected(client: Client, status: int, text: str, extra=()) -> None:
    response = client.response()
    assert (response.status, response.text) == (status, text + "\n")
    assert response.header(b"content-type") == TEXT_PLAIN
    assert response.header(b"access-control-allow-origin") == b"*"
    assert response.complete
    for name, value in extra:
        assert response.header(name) == value
    assert response.header(b"x-content-type-options") == b"nosniff"
    expected = {b"server", b"date", b"content-type", b"content-length",
                b"access-control-allow-origin", b"x-content-type-options",
                b"content-security-policy"} | {name.lower() for name, _ in extra}
    assert set(response.headerNames()) == expected


def assert_truncated(client: Client) -> None:
    """The server ended this response early: connection closed, no last chunk."""
    response = client.response()
    assert response.status == 200
    assert not response.complete
    assert not client.wire().endswith(b"0\r\n\r\n")
    assert not client.transport.connected or client.transport.writeClosed


def finish_body(client: Client, data: bytes = b"") -> None:
    client.send((chunk(data) if data else b"") + chunk(b""))


# --------------------------------------------------------------- the happy path
def test_one_receiver_gets_the_body_sender_first(env: Env) -> None:
    s = sender(env, first=b"hello ")
    assert s.reading == "paused"
    r = receiver(env)
    assert s.reading == "producing"
    s.send(chunk(b"world"))
    finish_body(s)
    response = r.response()
    assert (response.status, response.body, response.complete) == (200, b"hello world", True)
    assert response.chunked
    assert sender_lines(s) == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 1 receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    assert s.response().complete
    assert s.response().header(b"content-type") == TEXT_PLAIN
    assert s.response().header(b"access-control-allow-origin") == b"*"
    assert s.open and r.open


def test_progress_lines_receivers_first(env: Env) -> None:
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    assert r1.wire() == b"" and r2.wire() == b""
    s = sender(env, n=2)
    assert s.reading == "producing"
    finish_body(s, b"data")
    assert sender_lines(s) == [
        "[INFO] Waiting for 2 receiver(s)...",
        "[INFO] 2 receiver(s) has/have been connected.",
        "[INFO] Start sending to 2 receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    for r in (r1, r2):
        assert (r.response().body, r.response().complete) == (b"data", True)


def test_progress_lines_mixed_order(env: Env) -> None:
    r1 = receiver(env, n=3)
    s = sender(env, n=3)
    assert s.reading == "paused"
    r2 = receiver(env, n=3)
    assert s.reading == "paused"
    assert r1.wire() == b"" and r2.wire() == b""
    r3 = receiver(env, n=3)
    finish_body(s, b"xyz")
    assert sender_lines(s) == [
        "[INFO] Waiting for 3 receiver(s)...",
        "[INFO] 1 receiver(s) has/have been connected.",
        "[INFO] A receiver was connected.",
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 3 receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    for r in (r1, r2, r3):
        assert (r.response().body, r.response().complete) == (b"xyz", True)


def test_content_length_body_passes_length_on(env: Env) -> None:
    r = receiver(env)
    s = env.client().send(request(b"PUT", b"/p", body=b"0123456789"))
    response = r.response()
    assert response.header(b"content-length") == b"10"
    assert response.header(b"transfer-encoding") is None
    assert (response.body, response.complete) == (b"0123456789", True)
    assert sender_lines(s)[-1] == "[INFO] All receiver(s) was/were received successfully."


def test_body_split_over_many_reads_content_length(env: Env) -> None:
    r = receiver(env)
    body = bytes(range(256)) * 40
    s = env.client().send(request(b"POST", b"/p", body=body)[: -len(body)])
    for i in range(0, len(body), 333):
        s.send(body[i : i + 333])
    assert r.response().body == body and r.response().complete


def test_receiver_headers(env: Env) -> None:
    s = sender(
        env,
        headers=(
            (b"Content-Type", b"text/html; charset=utf-8"),
            (b"Content-Disposition", b'attachment; filename="a.txt"'),
            (b"X-Piping", b"one"),
            (b"X-Secret", b"not passed on"),
            (b"X-Piping", b"two"),
            (b"Cookie", b"c=1"),
        ),
    )
    r = receiver(env)
    finish_body(s, b"<b>x</b>")
    response = r.response()
    assert response.headers[-1][0] != b"X-Secret"
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"
    assert response.header(b"content-disposition") == b'attachment; filename="a.txt"'
    assert response.headerValues(b"x-piping") == [b"one", b"two"]
    assert response.header(b"access-control-allow-origin") == b"*"
    assert response.header(b"access-control-expose-headers") == b"X-Piping"
    assert response.header(b"x-robots-tag") == b"none"
    names = set(response.headerNames())
    assert names - {b"server", b"date", b"transfer-encoding"} == {
        b"content-type", b"content-disposition", b"x-piping",
        b"access-control-allow-origin", b"access-control-expose-headers", b"x-robots-tag",
        b"x-content-type-options", b"content-security-policy",
    }
    assert response.header(b"x-content-type-options") == b"nosniff"
    assert response.header(b"content-security-policy") == (
        b"sandbox; default-src 'none'; style-src 'unsafe-inline'"
    )
    assert response.header(b"server") == b"pipeserver"
    assert b"not passed on" not in r.wire() and b"c=1" not in r.wire()


def test_receiver_gets_no_content_type_when_sender_sent_none(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    finish_body(s, b"x")
    response = r.response()
    assert response.header(b"content-type") is None
    assert response.header(b"access-control-expose-headers") is None


def test_multipart_form_delivers_first_part(env: Env) -> None:
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="input_file"; filename="f.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"file\r\nbytes--X\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="other"\r\n\r\nignored\r\n'
        b"--XyZ--\r\n"
    )
    r = receiver(env)
    s = env.client().send(
        request(b"POST", b"/p", ((b"Content-Type", b"multipart/form-data; boundary=XyZ"),),
                chunked=True)
    )
    for i in range(0, len(body), 7):
        s.send(chunk(body[i : i + 7]))
    s.send(chunk(b""))
    response = r.response()
    assert (response.body, response.complete) == (b"file\r\nbytes--X", True)
    assert response.header(b"content-type") == b"application/octet-stream"
    assert response.header(b"content-disposition") == (
        b'form-data; name="input_file"; filename="f.bin"'
    )
    assert response.header(b"content-length") is None
    assert sender_lines(s)[-1] == "[INFO] All receiver(s) was/were received successfully."


def test_http10_sender_gets_lines_in_one_response(env: Env) -> None:
    r = receiver(env)
    s = env.client().send(request(b"PUT", b"/p", body=b"abc", version=b"HTTP/1.0"))
    wire = s.wire()
    assert wire.startswith(b"HTTP/1.0 200 ")
    head, _, body = wire.partition(b"\r\n\r\n")
    assert body == (
        b"[INFO] Waiting for 1 receiver(s)...\n"
        b"[INFO] 1 receiver(s) has/have been connected.\n"
        b"[INFO] Start sending to 1 receiver(s)!\n"
        b"[INFO] Sent successfully!\n"
        b"[INFO] All receiver(s) was/were received successfully.\n"
    )
    assert b"\r\nContent-Length: %d\r\n" % len(body) in head + b"\r\n"
    assert r.response().body == b"abc"


def test_path_is_free_again_after_a_transfer(env: Env) -> None:
    for round_ in range(2):
        s = sender(env)
        r = receiver(env)
        finish_body(s, b"round %d" % round_)
        assert r.response().body == b"round %d" % round_
        assert env.registry.pipes == {}


def test_pipelined_requests_after_a_transfer(env: Env) -> None:
    """The sender's connection stays usable: a GET after the PUT is answered."""
    r = receiver(env)
    s = env.client().send(request(b"PUT", b"/p", body=b"abc") + request(b"GET", b"/version"))
    responses = s.responses()
    assert [x.status for x in responses] == [200, 200]
    assert responses[0].lines[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert r.response().body == b"abc"


def test_trailing_slash_is_another_pipe(env: Env) -> None:
    s = sender(env, path=b"/e")
    r = receiver(env, path=b"/e/")
    assert r.wire() == b"" and s.reading == "paused"
    assert len(env.registry.pipes) == 2
    env.clock.advance(WAIT)
    assert r.response().status == 504


def test_query_string_is_not_part_of_the_path(env: Env) -> None:
    s = sender(env, path=b"/q")
    r = env.client().send(request(b"GET", b"/q?x=1"))
    finish_body(s, b"ok")
    assert r.response().body == b"ok"


# --------------------------------------------------------------- deadline
def test_receiver_deadline_fires_exactly_at_wait_timeout(env: Env) -> None:
    r = receiver(env)
    env.clock.advance(WAIT - 0.001)
    assert r.wire() == b""
    assert len(env.registry.pipes) == 1
    env.clock.advance(0.001)
    assert_rejected(r, 504, NO_SENDER)
    assert env.registry.pipes == {}
    assert env.deadlineCalls() == []


def test_sender_deadline_fires_exactly_at_wait_timeout(env: Env) -> None:
    s = sender(env, first=b"some")
    env.clock.advance(WAIT - 0.001)
    assert sender_lines(s) == ["[INFO] Waiting for 1 receiver(s)..."]
    assert s.open
    env.clock.advance(0.001)
    assert sender_lines(s) == ["[INFO] Waiting for 1 receiver(s)...", NOT_ALL]
    assert_truncated(s)
    assert s.wire().endswith(b"[ERROR] Not all receivers arrived on '/p' within 300 seconds.\n\r\n")
    # Its body is read (and dropped) again, so the client sees our lines, not a reset.
    assert s.reading == "producing"
    assert env.registry.pipes == {}
    # A client that does not close is cut after the grace period.
    assert s.transport.connected
    env.clock.advance(CLOSE_GRACE)
    assert not s.transport.connected and s.transport.aborted
    assert s.transport.lateWrites == [] or b"0\r\n\r\n" not in b"".join(s.transport.lateWrites)


def test_deadline_releases_everyone_waiting(env: Env) -> None:
    s = sender(env, n=3)
    r1, r2 = receiver(env, n=3), receiver(env, n=3)
    env.clock.advance(WAIT - 0.001)
    assert r1.wire() == r2.wire() == b""
    env.clock.advance(0.001)
    for r in (r1, r2):
        assert_rejected(r, 504, NOT_ALL)
    assert sender_lines(s)[-1] == NOT_ALL
    assert_truncated(s)
    env.clock.advance(CLOSE_GRACE)


def test_deadline_receivers_without_sender(env: Env) -> None:
    r1, r2 = receiver(env, n=3), receiver(env, n=3)
    env.clock.advance(WAIT)
    for r in (r1, r2):
        assert_rejected(r, 504, NO_SENDER)


def test_deadline_runs_from_the_first_arrival(env: Env) -> None:
    receiver(env, n=2)
    env.clock.advance(100)
    r2 = receiver(env, n=2)
    env.clock.advance(WAIT - 100)
    assert_rejected(r2, 504, NO_SENDER)


def test_deadline_text_uses_the_configured_timeout(make_site) -> None:
    env = make_site("--wait-timeout", "0.5")
    r = receiver(env, path=b"/x")
    env.clock.advance(0.499)
    assert r.wire() == b""
    env.clock.advance(0.001)
    assert_rejected(r, 504, "[ERROR] No sender arrived on '/x' within 0.5 seconds.")


def test_deadline_cancelled_when_established(env: Env) -> None:
    s = sender(env)
    assert len(env.deadlineCalls()) == 1
    assert env.deadlineCalls()[0].getTime() == WAIT
    r = receiver(env)
    assert env.deadlineCalls() == []
    env.clock.advance(WAIT * 3)
    assert s.open and r.open
    finish_body(s, b"late but fine")
    assert (r.response().body, r.response().complete) == (b"late but fine", True)
    assert sender_lines(s)[-1] == "[INFO] All receiver(s) was/were received successfully."


def test_path_reusable_after_deadline(env: Env) -> None:
    r = receiver(env)
    env.clock.advance(WAIT)
    assert r.response().status == 504
    s = sender(env)
    r2 = receiver(env)
    finish_body(s, b"again")
    assert r2.response().body == b"again"


# --------------------------------------------------------------- errors (SPEC §6)
@pytest.mark.parametrize("path", [b"/", b"/noscript", b"/help", b"/version",
                                  b"/favicon.ico", b"/robots.txt"])
@pytest.mark.parametrize("method", [b"PUT", b"POST"])
def test_send_to_reserved_path(env: Env, method: bytes, path: bytes) -> None:
    c = env.client().send(request(method, path, body=b"x"))
    assert_rejected(
        c, 400,
        f"[ERROR] Cannot send to the reserved path '{path.decode()}'. (e.g. '/mypath123')",
    )


def test_content_range_on_send(env: Env) -> None:
    c = env.client().send(request(b"PUT", b"/p", ((b"Content-Range", b"bytes 0-0/1"),),
                                  body=b"x"))
    assert_rejected(c, 400, "[ERROR] Content-Range is not supported for now in PUT")


@pytest.mark.parametrize("value", [b"abc", b"1.5", b"", b"0x2", b"2a"])
def test_sender_n_not_a_number(env: Env, value: bytes) -> None:
    c = env.client().send(request(b"PUT", b"/p?n=" + value, body=b"x"))
    assert_rejected(c, 400, '[ERROR] Invalid "n" query parameter\nn is the number of receivers, a whole number from 1 to 256: e.g. ?n=2')


@pytest.mark.parametrize("value", [b"abc", b"1.5", b"", b"0x2", b"2a"])
def test_receiver_n_not_a_number(env: Env, value: bytes) -> None:
    c = env.client().send(request(b"GET", b"/p?n=" + value))
    assert_rejected(c, 400, '[ERROR] Invalid query parameter "n"\nn is the number of receivers, a whole number from 1 to 256: e.g. ?n=2')


@pytest.mark.parametrize("method", [b"GET", b"PUT"])
@pytest.mark.parametrize("n", [0, -1])
def test_n_not_positive(env: Env, method: bytes, n: int) -> None:
    body = b"x" if method == b"PUT" else None
    c = env.client().send(request(method, b"/p?n=%d" % n, body=body))
    assert_rejected(c, 400, f"[ERROR] n should > 0, but n = {n}.")


@pytest.mark.parametrize("method", [b"GET", b"PUT"])
def test_n_too_large(env: Env, method: bytes) -> None:
    body = b"x" if method == b"PUT" else None
    c = env.client().send(request(method, b"/p?n=300", body=body))
    assert_rejected(c, 400, "[ERROR] n should be at most 256, but n = 300.")
    ok = env.client().send(request(method, b"/q?n=256", body=body))
    assert ok.wire() == b"" or ok.response().status == 200
    env.clock.advance(WAIT)
    env.clock.advance(CLOSE_GRACE)


def test_n_limit_is_configurable(make_site) -> None:
    env = make_site("--max-receivers", "5")
    c = receiver(env, n=6)
    assert_rejected(c, 400, "[ERROR] n should be at most 5, but n = 6.")


def test_receiver_on_established_pipe(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    late = receiver(env)
    assert_rejected(late, 400, "[ERROR] Connection on '/p' has been established already.")
    finish_body(s, b"x")
    assert r.response().body == b"x"


def test_sender_on_established_pipe(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    late = env.client().send(request(b"PUT", b"/p", body=b"intruder"))
    assert_rejected(late, 400, "[ERROR] Connection on '/p' has been established already.")
    finish_body(s, b"x")
    assert r.response().body == b"x"


def test_second_sender(env: Env) -> None:
    s = sender(env)
    second = env.client().send(request(b"PUT", b"/p", body=b"intruder"))
    assert_rejected(second, 400, "[ERROR] Another sender has been connected on '/p'.\n" + errors.SECOND_SENDER_HINT)
    r = receiver(env)
    finish_body(s, b"first")
    assert r.response().body == b"first"


@pytest.mark.parametrize("method", [b"GET", b"PUT"])
def test_n_differs_from_the_pipe(env: Env, method: bytes) -> None:
    r = receiver(env, n=2)
    body = b"x" if method == b"PUT" else None
    c = env.client().send(request(method, b"/p?n=3", body=body))
    assert_rejected(c, 400, "[ERROR] The number of receivers should be 2 but 3.\nThe pipe on '/p' is for 2 receiver(s): use ?n=2 in your URL.")
    # The implicit n=1 also counts as a different n.
    c1 = env.client().send(request(method, b"/p", body=body))
    assert_rejected(c1, 400, "[ERROR] The number of receivers should be 2 but 1.\nThe pipe on '/p' is for 2 receiver(s): add ?n=2 to your URL (without ?n, n is 1).")
    env.clock.advance(WAIT)
    assert r.response().status == 504


def test_receiver_beyond_k(env: Env) -> None:
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    r3 = receiver(env, n=2)
    assert_rejected(r3, 400, "[ERROR] The number of receivers has reached limits.\n" + errors.RECEIVERS_FULL_HINT)
    s = sender(env, n=2)
    finish_body(s, b"two")
    assert r1.response().body == r2.response().body == b"two"


def test_service_worker_registration_rejected(env: Env) -> None:
    c = env.client().send(request(b"GET", b"/p", ((b"Service-Worker", b"script"),)))
    assert_rejected(c, 400, "[ERROR] Service Worker registration is rejected.")


@pytest.mark.parametrize("method", [b"DELETE", b"PATCH", b"TRACE"])
def test_other_methods(env: Env, method: bytes) -> None:
    c = env.client().send(request(method, b"/p"))
    assert_rejected(
        c, 405, f"[ERROR] Unsupported method: {method.decode()}.",
        [(b"allow", b"GET, HEAD, POST, PUT, OPTIONS")],
    )


def test_rejections_leave_the_waiting_pipe_alone(env: Env) -> None:
    s = sender(env, n=2)
    for raw in (request(b"GET", b"/p?n=3"), request(b"GET", b"/p?n=x"),
                request(b"PUT", b"/p?n=2", body=b"no")):
        assert env.client().send(raw).response().status == 400
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    finish_body(s, b"ok")
    assert r1.response().body == r2.response().body == b"ok"


def test_rejected_sender_with_body_in_flight_then_pipelined_request(env: Env) -> None:
    s = sender(env)
    other = env.client().send(
        request(b"PUT", b"/p", ((b"Expect", b"100-continue"),), chunked=True)
        + chunk(b"first part of a body")
    )
    wire = other.wire()
    assert wire.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 ")
    assert_rejected(other, 400, "[ERROR] Another sender has been connected on '/p'.\n" + errors.SECOND_SENDER_HINT)
    assert other.open
    # The rest of its body, and a pipelined request after it.
    other.send(chunk(b"more") + chunk(b"") + request(b"GET", b"/version"))
    responses = other.responses()
    assert [x.status for x in responses] == [100, 400, 200]
    assert responses[2].complete and responses[2].body.strip()
    r = receiver(env)
    finish_body(s, b"real")
    assert r.response().body == b"real"


def test_rejected_sender_content_length_then_pipelined(env: Env) -> None:
    c = env.client().send(request(b"PUT", b"/help", body=b"0123456789")[:-4])
    assert c.response().status == 400
    c.send(b"6789" + request(b"GET", b"/robots.txt"))
    assert [x.status for x in c.responses()] == [400, 404]


def test_head_on_a_pipe_takes_no_place(env: Env) -> None:
    c = env.client().send(request(b"HEAD", b"/p"))
    (response,) = c.responses(head=True)
    assert response.status == 200
    assert env.registry.pipes == {}


# --------------------------------------------------------------- 100-continue
def test_expect_continue_answered_first_when_waiting(env: Env) -> None:
    s = sender(env, expect=True)
    assert s.wire().startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    r = receiver(env)
    finish_body(s, b"x")
    assert [x.status for x in s.responses()] == [100, 200]
    assert r.response().body == b"x"


def test_expect_continue_answered_first_when_established_at_once(env: Env) -> None:
    r = receiver(env)
    s = sender(env, expect=True, first=b"abc")
    assert s.wire().startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    finish_body(s)
    assert r.response().body == b"abc"


def test_a_rejection_known_before_the_body_replaces_100_continue(env: Env) -> None:
    c = env.client().send(
        request(b"PUT", b"/help", ((b"Expect", b"100-continue"),), chunked=True)
    )
    # The body was never asked for, so it is never read: the connection ends.
    assert c.wire().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"100 Continue" not in c.wire()
    assert c.response().header(b"connection") == b"close"
    assert not c.open


def test_expect_continue_before_a_rejection_of_the_pipe(env: Env) -> None:
    # A second sender is refused by the pipe, after the 100: its body is
    # read (and dropped) so the connection can go on.
    first = sender(env)
    c = env.client().send(
        request(b"PUT", b"/p", ((b"Expect", b"100-continue"),), chunked=True)
    )
    assert c.wire().startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 ")
    c.send(chunk(b""))
    assert c.response().lines == [
        "[ERROR] Another sender has been connected on '/p'.",
        errors.SECOND_SENDER_HINT,
    ]
    first.disconnect()


# --------------------------------------------------------------- backpressure
def test_sender_not_read_before_establishment(env: Env) -> None:
    s = sender(env)
    assert s.reading == "paused"
    r1 = receiver(env, path=b"/other")  # another pipe does not count
    assert s.reading == "paused"
    env.clock.advance(WAIT)
    assert r1.response().status == 504
    env.clock.advance(CLOSE_GRACE)


def test_bytes_read_while_paused_are_kept(env: Env) -> None:
    # The first chunk came in the same read as the head, after the pause.
    s = sender(env, first=b"early;")
    assert s.reading == "paused"
    s.send(chunk(b"still-in-the-read;"))
    r = receiver(env)
    assert r.response().body == b"early;still-in-the-read;"
    s.send(chunk(b"later"))
    finish_body(s)
    assert (r.response().body, r.response().complete) == (
        b"early;still-in-the-read;later", True)


def test_pause_resume_one_receiver(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    assert s.reading == "producing"
    r.pause()
    assert s.reading == "paused"
    # A read already under way is still delivered, and passed on.
    s.send(chunk(b"in flight"))
    assert r.response().body == b"in flight"
    r.resume()
    assert s.reading == "producing"
    r.pause()
    r.resume()
    assert s.reading == "producing"
    finish_body(s, b"!")
    assert (r.response().body, r.response().complete) == (b"in flight!", True)


def test_pause_resume_many_receivers(env: Env) -> None:
    s = sender(env, n=3)
    r1, r2, r3 = (receiver(env, n=3) for _ in range(3))
    assert s.reading == "producing"
    r1.pause()
    r2.pause()
    assert s.reading == "paused"
    s.send(chunk(b"a"))
    r1.resume()
    assert s.reading == "paused"
    r2.resume()
    assert s.reading == "producing"
    r3.pause()
    assert s.reading == "paused"
    r3.resume()
    assert s.reading == "producing"
    finish_body(s, b"b")
    for r in (r1, r2, r3):
        assert (r.response().body, r.response().complete) == (b"ab", True)


def test_paused_receiver_leaving_resumes_the_others(env: Env) -> None:
    s = sender(env, n=2)
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    r1.pause()
    assert s.reading == "paused"
    r1.disconnect()
    assert s.reading == "producing"
    finish_body(s, b"z")
    assert r2.response().body == b"z"
    assert sender_lines(s)[-1] == "[INFO] 1 of 2 receiver(s) received successfully."


# --------------------------------------------------------------- disconnects
def test_sender_disconnects_mid_body_chunked(env: Env) -> None:
    s = sender(env, n=2)
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    s.send(chunk(b"partial"))
    s.disconnect()
    for r in (r1, r2):
        assert r.response().body == b"partial"
        assert_truncated(r)
        assert not r.transport.connected
    assert env.registry.pipes == {}


def test_sender_disconnects_mid_body_content_length(env: Env) -> None:
    r = receiver(env)
    s = env.client().send(request(b"PUT", b"/p", body=b"0123456789")[:-6])
    s.disconnect()
    response = r.response()
    assert (response.header(b"content-length"), response.body) == (b"10", b"0123")
    assert not response.complete
    assert not r.transport.connected


def test_sender_disconnects_while_waiting_frees_its_place(env: Env) -> None:
    s = sender(env)
    s.disconnect()
    assert env.registry.pipes == {}
    s2 = sender(env)
    r = receiver(env)
    finish_body(s2, b"second sender")
    assert r.response().body == b"second sender"


def test_sender_leaves_while_receivers_wait(env: Env) -> None:
    r1 = receiver(env, n=2)
    s = sender(env, n=2)
    s.disconnect()
    assert len(env.registry.pipes) == 1
    s2 = sender(env, n=2)
    r2 = receiver(env, n=2)
    finish_body(s2, b"ok")
    assert r1.response().body == r2.response().body == b"ok"
    assert sender_lines(s2)[:2] == [
        "[INFO] Waiting for 2 receiver(s)...",
        "[INFO] 1 receiver(s) has/have been connected.",
    ]


def test_receiver_leaves_while_waiting(env: Env) -> None:
    r = receiver(env)
    r.disconnect()
    assert env.registry.pipes == {}
    s = sender(env, n=2)
    r1 = receiver(env, n=2)
    r1.disconnect()
    r2, r3 = receiver(env, n=2), receiver(env, n=2)
    finish_body(s, b"ok")
    assert r2.response().body == r3.response().body == b"ok"
    assert sender_lines(s) == [
        "[INFO] Waiting for 2 receiver(s)...",
        "[INFO] A receiver was connected.",
        "[INFO] A receiver was connected.",
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 2 receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]


def test_only_receiver_aborts(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    s.send(chunk(b"some"))
    r.disconnect()
    assert sender_lines(s) == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 1 receiver(s)!",
        "[INFO] A receiver aborted.",
        "[INFO] All receiver(s) was/were aborted halfway.",
    ]
    assert_truncated(s)
    assert env.registry.pipes == {}
    assert s.reading == "producing"
    # The rest of the body is read and dropped; nothing more is said.
    before = s.wire()
    s.send(chunk(b"more"))
    finish_body(s)
    assert s.wire() == before
    env.clock.advance(CLOSE_GRACE)
    assert not s.transport.connected


def test_one_of_three_receivers_aborts(env: Env) -> None:
    s = sender(env, n=3)
    r1, r2, r3 = (receiver(env, n=3) for _ in range(3))
    s.send(chunk(b"abc"))
    r2.disconnect()
    s.send(chunk(b"def"))
    finish_body(s)
    for r in (r1, r3):
        assert (r.response().body, r.response().complete) == (b"abcdef", True)
    lines = sender_lines(s)
    assert lines[-3:] == [
        "[INFO] A receiver aborted.",
        "[INFO] Sent successfully!",
        "[INFO] 2 of 3 receiver(s) received successfully.",
    ]
    assert s.response().complete


# --------------------------------------------------------------- idle timeouts
def test_idle_timeout_does_not_cut_a_waiting_receiver(env: Env) -> None:
    r = receiver(env)
    env.clock.advance(61)
    env.clock.advance(61)
    assert r.open and r.wire() == b""
    env.clock.advance(WAIT - 122)
    assert_rejected(r, 504, NO_SENDER)


def test_idle_timeout_does_not_cut_a_waiting_sender(env: Env) -> None:
    s = sender(env, first=b"x")
    env.clock.advance(61)
    env.clock.advance(61)
    assert s.open and s.reading == "paused"
    assert sender_lines(s) == ["[INFO] Waiting for 1 receiver(s)..."]
    env.clock.advance(WAIT - 122)
    assert sender_lines(s)[-1] == NOT_ALL
    env.clock.advance(CLOSE_GRACE)


def test_idle_timeout_does_not_cut_a_paused_transfer(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    r.pause()
    for _ in range(10):
        env.clock.advance(61)
    assert s.open and r.open and s.reading == "paused"
    r.resume()
    finish_body(s, b"slow")
    assert (r.response().body, r.response().complete) == (b"slow", True)


def test_idle_timeout_cuts_half_a_request_line(make_site) -> None:
    env = make_site("--header-timeout", "1000")
    c = env.client().send(b"GET /p HT")
    env.clock.advance(60 - 0.001)
    assert c.transport.connected and not c.transport.disconnecting
    env.clock.advance(0.001)
    assert c.transport.disconnecting
    assert not c.transport.connected
    assert env.registry.pipes == {}


def test_header_timeout_cuts_half_a_request_line_first(env: Env) -> None:
    c = env.client().send(b"GET /p HT")
    env.clock.advance(20 - 0.001)
    assert c.transport.connected and c.wire() == b""
    env.clock.advance(0.001)
    assert not c.transport.connected
    response = c.response()
    assert (response.status, response.text) == (408, "[ERROR] Request headers took too long.\n")
    assert response.header(b"content-type") == TEXT_PLAIN
    assert response.header(b"connection") == b"close"


def test_idle_timeout_is_configurable(make_site) -> None:
    env = make_site("--idle-timeout", "5")
    c = env.client().send(b"PUT /p HTTP/1.1\r\nHost: x\r\n")
    env.clock.advance(4.999)
    assert c.transport.connected
    env.clock.advance(0.001)
    assert not c.transport.connected


def test_idle_timeout_restored_after_a_transfer(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    finish_body(s, b"x")
    assert s.open
    env.clock.advance(60)
    assert not s.transport.connected
    assert not r.transport.connected


# --------------------------------------------------------------- edge cases
@pytest.mark.parametrize("sender_first", [True, False])
@pytest.mark.parametrize("head", [
    request(b"PUT", b"/p", body=b""),                       # Content-Length: 0
    b"PUT /p HTTP/1.1\r\nHost: x\r\n\r\n",                  # no body at all
    request(b"POST", b"/p", chunked=True) + chunk(b""),     # chunked, empty
])
def test_empty_body(env: Env, sender_first: bool, head: bytes) -> None:
    if sender_first:
        s = env.client().send(head)
        r = receiver(env)
    else:
        r = receiver(env)
        s = env.client().send(head)
    response = r.response()
    assert (response.status, response.body, response.complete) == (200, b"", True)
    assert sender_lines(s)[-2:] == [
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    assert s.response().complete


def test_whole_body_arrives_before_the_receiver(env: Env) -> None:
    s = env.client().send(request(b"PUT", b"/p", chunked=True) + chunk(b"all") + chunk(b""))
    assert sender_lines(s) == ["[INFO] Waiting for 1 receiver(s)..."]
    r = receiver(env)
    assert (r.response().body, r.response().complete) == (b"all", True)
    assert sender_lines(s)[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert s.response().complete


def test_whole_content_length_body_with_the_head_before_receivers(env: Env) -> None:
    r1 = receiver(env, n=2)
    s = env.client().send(request(b"PUT", b"/p?n=2", body=b"0123456789"))
    r2 = receiver(env, n=2)
    for r in (r1, r2):
        response = r.response()
        assert (response.body, response.complete) == (b"0123456789", True)
        assert response.header(b"content-length") == b"10"


def test_pipes_are_independent(env: Env) -> None:
    sa, ra = sender(env, path=b"/a"), receiver(env, path=b"/a")
    sb, rb = sender(env, path=b"/b"), receiver(env, path=b"/b")
    ra.pause()
    assert (sa.reading, sb.reading) == ("paused", "producing")
    sb.send(chunk(b"b-data") + chunk(b""))
    assert (rb.response().body, rb.response().complete) == (b"b-data", True)
    ra.resume()
    sa.send(chunk(b"a-data") + chunk(b""))
    assert (ra.response().body, ra.response().complete) == (b"a-data", True)


def test_sender_leaves_after_its_body_ended_while_waiting(env: Env) -> None:
    s = env.client().send(request(b"PUT", b"/p", chunked=True) + chunk(b"x") + chunk(b""))
    s.disconnect()
    assert env.registry.pipes == {}
    r = receiver(env)
    assert r.wire() == b""
    env.clock.advance(WAIT)
    assert_rejected(r, 504, NO_SENDER)


def test_http10_sender_deadline_gets_no_response(env: Env) -> None:
    s = env.client().send(
        request(b"PUT", b"/p", body=b"abcdef", version=b"HTTP/1.0")[:-3])
    env.clock.advance(WAIT)
    assert s.wire() == b""
    env.clock.advance(CLOSE_GRACE)
    assert not s.transport.connected


def test_receiver_leaving_after_completion_changes_nothing(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    finish_body(s, b"done")
    before = s.wire()
    r.disconnect()
    assert s.wire() == before
    assert s.response().lines[-1] == "[INFO] All receiver(s) was/were received successfully."


# --------------------------------------------------------------- hang-up watcher
class _SocketTransport:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.aborted = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def abortConnection(self) -> None:
        self.aborted += 1


@pytest.fixture
def socketpair():
    import socket

    pairs = []

    def make():
        pair = socket.socketpair()
        pairs.append(pair)
        return pair

    yield make
    for a, b in pairs:
        a.close()
        b.close()


def test_hangup_watcher_aborts_a_transport_whose_peer_left(socketpair) -> None:
    from twisted.internet.testing import MemoryReactor

    from pipeserver.http.fastpath import HangupWatcher

    reactor = MemoryReactor()
    watcher = HangupWatcher(reactor)
    (a1, b1), (a2, b2) = socketpair(), socketpair()
    gone, staying = _SocketTransport(a1), _SocketTransport(a2)
    watcher.watch(gone)
    watcher.watch(staying)
    assert reactor.getReaders() == [watcher]
    b2.sendall(b"unread data is no hang-up")
    watcher.doRead()
    assert (gone.aborted, staying.aborted) == (0, 0)
    b1.close()
    watcher.doRead()
    assert (gone.aborted, staying.aborted) == (1, 0)
    assert reactor.getReaders() == [watcher]
    watcher.unwatch(staying)
    assert reactor.getReaders() == []


def test_waiting_sender_is_watched_and_freed_when_it_hangs_up(env: Env, socketpair) -> None:
    ours, peer = socketpair()
    s = env.client()
    s.transport.fileno = ours.fileno  # type: ignore[attr-defined]
    s.send(request(b"PUT", b"/p", chunked=True))
    watcher = env.registry.watcher
    assert s.reading == "paused"
    assert watcher in env.clock.getReaders()
    peer.close()
    watcher.doRead()
    s.flush()  # the reactor delivers connectionLost on its next turn
    assert s.transport.aborted and not s.transport.connected
    assert env.registry.pipes == {}
    assert watcher not in env.clock.getReaders()


def test_sender_is_unwatched_once_established(env: Env, socketpair) -> None:
    ours, peer = socketpair()
    s = env.client()
    s.transport.fileno = ours.fileno  # type: ignore[attr-defined]
    s.send(request(b"PUT", b"/p", chunked=True))
    watcher = env.registry.watcher
    assert watcher in env.clock.getReaders()
    r = receiver(env)
    assert watcher not in env.clock.getReaders()
    # Paused by a slow receiver while streaming: not the watcher's business.
    r.pause()
    assert watcher not in env.clock.getReaders()
    r.resume()
    finish_body(s, b"ok")
    assert r.response().body == b"ok"


def _watched_receiver(env: Env, sock) -> Client:
    r = env.client()
    r.transport.fileno = sock.fileno  # type: ignore[attr-defined]
    return r.send(request(b"GET", b"/p"))


def test_receiver_is_watched_and_freed_when_it_hangs_up_on_a_quiet_stream(
        env: Env, socketpair) -> None:
    # Its sender pauses: nothing is written to it, and its connection may
    # not be read (issue 18); the kernel still says it left.
    ours, peer = socketpair()
    s = sender(env, first=b"hello")
    r = _watched_receiver(env, ours)
    watcher = env.registry.watcher
    assert r.response().body == b"hello"
    assert watcher in env.clock.getReaders()
    peer.close()
    watcher.doRead()
    r.flush()  # the reactor delivers connectionLost on its next turn
    assert r.transport.aborted and not r.transport.connected
    assert sender_lines(s)[-2:] == [
        "[INFO] A receiver aborted.",
        "[INFO] All receiver(s) was/were aborted halfway.",
    ]
    assert env.registry.pipes == {}
    assert watcher not in env.clock.getReaders()


def test_receiver_is_unwatched_once_its_response_ends(env: Env, socketpair) -> None:
    # Its connection may carry a next request: no longer the pipe's to watch.
    ours, peer = socketpair()
    s = sender(env)
    r = _watched_receiver(env, ours)
    watcher = env.registry.watcher
    assert watcher in env.clock.getReaders()
    finish_body(s, b"ok")
    assert r.response().body == b"ok" and r.response().complete
    assert watcher not in env.clock.getReaders()


# --------------------------------------------------------------- rejected uploads
@pytest.mark.parametrize("path", [b"/help", b"/p"])
def test_rejected_sender_that_trickles_its_body_is_cut_at_the_header_timeout(
        env: Env, path: bytes) -> None:
    """A rejected upload is neither waiting nor streaming: its body goes
    nowhere, so it must come whole within --header-timeout (20 s) of the
    request's first byte, however it trickles (each byte would reset the idle
    timeout)."""
    holder = sender(env) if path == b"/p" else None  # makes /p a second sender
    c = env.client().send(request(b"PUT", path, chunked=True) + chunk(b"abc"))
    assert c.response().status == 400
    for _ in range(19):
        env.clock.advance(1)
        c.send(chunk(b"."))  # still sending
    env.clock.advance(0.9)
    assert c.transport.connected
    env.clock.advance(0.1)
    assert not c.transport.connected
    # Its answer was whole: nothing more was written after it.
    assert c.response().status == 400 and c.response().complete
    if holder is not None:
        env.clock.advance(WAIT)
        env.clock.advance(CLOSE_GRACE)


# --------------------------------------------------------------- broken forms
FORM = ((b"Content-Type", b"multipart/form-data; boundary=B"),)


def test_form_without_its_boundary_fails_everyone(env: Env) -> None:
    from pipeserver.domain.multipart import MAX_PREAMBLE

    r = receiver(env)
    s = env.client().send(request(b"POST", b"/p", FORM, chunked=True))
    s.send(chunk(b"z" * (MAX_PREAMBLE + 1)))
    # No part headers ever came: the receiver got no response at all.
    assert r.wire() == b""
    assert not r.transport.connected
    assert sender_lines(s)[-1] == "[INFO] Start sending to 1 receiver(s)!"
    assert_truncated(s)
    assert env.registry.pipes == {}
    s.send(chunk(b"rest") + chunk(b""))
    env.clock.advance(CLOSE_GRACE)
    assert not s.transport.connected


def test_form_that_ends_without_closing_boundary_truncates_receivers(env: Env) -> None:
    r = receiver(env)
    s = env.client().send(request(b"POST", b"/p", FORM, chunked=True))
    s.send(chunk(b"--B\r\nContent-Type: a/b\r\n\r\n" + b"x" * 100))
    s.send(chunk(b""))
    response = r.response()
    assert response.header(b"content-type") == b"a/b"
    assert not response.complete
    assert not r.transport.connected
    assert "[INFO] Sent successfully!" not in sender_lines(s)
    assert_truncated(s)
    env.clock.advance(CLOSE_GRACE)


def test_http10_receiver_of_a_chunked_upload(env: Env) -> None:
    s = sender(env)
    r = env.client().send(request(b"GET", b"/p", version=b"HTTP/1.0"))
    finish_body(s, b"old client")
    wire = r.wire()
    assert wire.startswith(b"HTTP/1.0 200 OK\r\n")
    assert wire.endswith(b"\r\n\r\nold client")
    assert b"Transfer-Encoding" not in wire
    # Without a length, only the close tells the end.
    assert not r.transport.connected


def test_pipelined_second_upload_to_the_same_path(env: Env) -> None:
    """The path is free the moment a transfer ends, even for a request that
    was already waiting behind it on the sender's own connection."""
    r1 = receiver(env)
    s = env.client().send(request(b"PUT", b"/p", body=b"abc") + request(b"PUT", b"/p", body=b"def"))
    first, second = s.responses()
    assert first.lines[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert first.complete
    assert (second.status, second.lines) == (200, ["[INFO] Waiting for 1 receiver(s)..."])
    assert r1.response().body == b"abc"
    r2 = receiver(env)
    assert (r2.response().body, r2.response().complete) == (b"def", True)
    assert s.responses()[1].lines[-1] == "[INFO] All receiver(s) was/were received successfully."


# --------------------------------------------------------------- the sender's own write buffer
def test_sender_write_buffer_draining_does_not_resume_a_waiting_upload(env: Env) -> None:
    """The sender's transport pauses and resumes its channel when the
    sender's own response backs up and drains; HTTPChannel then resumes
    reading, but an upload waiting for its receivers must stay unread."""
    s = sender(env)
    assert s.reading == "paused"
    s.pause()
    s.resume()
    assert s.reading == "paused"
    r = receiver(env)
    assert s.reading == "producing"
    finish_body(s, b"x")
    assert r.response().body == b"x"


def test_sender_write_buffer_draining_does_not_bypass_a_slow_receiver(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    r.pause()
    assert s.reading == "paused"
    s.pause()
    s.resume()
    assert s.reading == "paused"
    r.resume()
    assert s.reading == "producing"
    s.pause()
    s.resume()
    assert s.reading == "producing"
    finish_body(s, b"x")


def test_closed_sender_keeps_reading_after_its_write_buffer_drains(env: Env) -> None:
    s = sender(env)
    env.clock.advance(WAIT)
    assert s.reading == "producing"
    s.pause()
    s.resume()
    assert s.reading == "producing"
    env.clock.advance(CLOSE_GRACE)


def test_shut_sender_is_read_for_the_linger_then_cut(env: Env) -> None:
    from pipeserver.http.parties import SENDER_LINGER

    s = sender(env, first=b"some")
    env.clock.advance(WAIT)
    assert sender_lines(s)[-1] == NOT_ALL
    assert s.reading == "producing"
    env.clock.advance(SENDER_LINGER - 0.001)
    assert s.transport.connected
    env.clock.advance(0.001)
    assert not s.transport.connected and s.transport.aborted


def test_a_shut_sender_that_shuts_its_side_too_is_gone_at_once(env: Env) -> None:
    """Failed, a sender's side is shut by us and its upload read on for the
    linger; once its client shuts its side too (curl, having read our last
    lines), nothing is left to read or send: the connection goes then, not
    at the linger's cut, and no timer of it is left (issue 17, item 7)."""
    s = env.client().send(request(b"PUT", b"/p", body=b"whole"))
    env.clock.advance(WAIT)
    assert sender_lines(s)[-1] == NOT_ALL
    assert s.transport.writeClosed and s.transport.connected
    s.proto.readConnectionLost()  # its FIN
    s.flush()
    assert not s.transport.connected and not s.transport.aborted
    assert env.clock.getDelayedCalls() == []


# --------------------------------------------------------------- stalled receivers
STALL_CUT = "[INFO] A receiver was cut: it took no bytes for 60 seconds."


def test_a_stalled_receiver_of_a_fan_out_is_cut_at_the_stall_timeout(env: Env) -> None:
    s = sender(env, n=3)
    r1, r2, r3 = (receiver(env, n=3) for _ in range(3))
    s.send(chunk(b"abc"))
    r2.pause()  # its transport cannot take more, and it never resumes
    assert s.reading == "paused"
    env.clock.advance(59.9)
    assert r2.open and s.reading == "paused"
    env.clock.advance(0.1)
    # Cut at once (aborted, no last chunk); the others go on.
    assert r2.transport.aborted and not r2.transport.connected
    assert_truncated(r2)
    assert r2.response().body == b"abc"
    assert s.reading == "producing"
    s.send(chunk(b"def"))
    finish_body(s)
    for r in (r1, r3):
        assert (r.response().body, r.response().complete) == (b"abcdef", True)
    assert sender_lines(s)[-3:] == [
        STALL_CUT,
        "[INFO] Sent successfully!",
        "[INFO] 2 of 3 receiver(s) received successfully.",
    ]
    assert s.response().complete
    assert env.registry.partiesByClient == {}


def test_a_receiver_that_resumes_in_time_is_not_cut(env: Env) -> None:
    s = sender(env, n=2)
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    r1.pause()
    env.clock.advance(59.5)
    r1.resume()  # it took every byte held for it
    r1.pause()
    # The next look (at 60) sees it moved: a whole timeout again from there.
    env.clock.pump([0.5] * 120)
    assert r1.open
    env.clock.advance(0.5)
    assert not r1.open
    finish_body(s, b"z")
    assert (r2.response().body, r2.response().complete) == (b"z", True)
    assert sender_lines(s)[-3:] == [
        STALL_CUT,
        "[INFO] Sent successfully!",
        "[INFO] 1 of 2 receiver(s) received successfully.",
    ]


def test_a_lone_receiver_is_never_cut_for_stalling(env: Env) -> None:
    s = sender(env)
    r = receiver(env)
    s.send(chunk(b"abc"))
    r.pause()
    env.clock.advance(3600)
    assert r.open and s.reading == "paused"
    r.resume()
    finish_body(s)
    assert (r.response().body, r.response().complete) == (b"abc", True)


@pytest.mark.parametrize("timeout, cut_at", [("0", None), ("2.5", 2.5)])
def test_stall_timeout_is_configurable(make_site, timeout, cut_at) -> None:
    env = make_site("--stall-timeout", timeout)
    s = sender(env, n=2)
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    r1.pause()
    if cut_at is None:
        env.clock.advance(3600)
        assert r1.open
        r1.resume()
        finish_body(s, b"ok")
        assert sender_lines(s)[-1] == "[INFO] All receiver(s) was/were received successfully."
        return
    env.clock.advance(cut_at - 0.001)
    assert r1.open
    env.clock.advance(0.001)
    assert not r1.open
    finish_body(s, b"ok")
    assert sender_lines(s)[-3] == (
        "[INFO] A receiver was cut: it took no bytes for 2.5 seconds.")


def test_every_receiver_stalled_ends_the_transfer(env: Env) -> None:
    s = sender(env, n=2)
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    s.send(chunk(b"abc"))
    r1.pause()
    r2.pause()
    env.clock.advance(60)
    assert not r1.open and not r2.open
    assert sender_lines(s)[-3:] == [
        STALL_CUT, STALL_CUT, "[INFO] All receiver(s) was/were aborted halfway."]
    env.clock.advance(CLOSE_GRACE)
    assert not s.open


# --------------------------------------------------------------- shutdown
def test_shutdown_cuts_receivers_at_once_when_the_grace_ends(env: Env) -> None:
    s = sender(env, n=2)
    r1, r2 = receiver(env, n=2), receiver(env, n=2)
    s.send(chunk(b"abc"))
    r2.pause()  # bytes are held for it: a graceful close would wait for them
    drained: list = []
    env.registry.shutdown(30.0).addCallback(drained.append)
    env.clock.advance(29.9)
    assert r1.open and r2.open and drained == []
    env.clock.advance(0.1)
    for r in (r1, r2):
        assert r.transport.aborted and not r.transport.connected
        assert_truncated(r)
    assert env.registry.cutAtShutdown == 1
    env.clock.advance(0)
    assert drained == [None]
    env.clock.advance(CLOSE_GRACE)
    assert not s.open


# --------------------------------------------------------------- per-request costs (issue 20)
def test_a_connection_asks_its_local_address_once(env: Env) -> None:
    # Twisted's Request.__init__ asks for it at every request; a TCP
    # transport asks the kernel each time (getsockname).
    c = env.client()
    asked: List[object] = []
    original = c.transport.getHost

    def counting() -> Any:
        asked.append(1)
        return original()

    c.transport.getHost = counting  # type: ignore[method-assign]
    for _ in range(3):
        c.send(b"GET /version HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert [r.status for r in c.responses()] == [200, 200, 200]
    assert c.proto.getHost() is c.proto.getHost() == original()
    assert len(asked) == 1


def _on_a_socket(env: Env, request_: bytes) -> Tuple[object, object, object]:
    """A PipeChannel on a real TCP transport over a loopback connection, so
    the fast path applies, its reactor the env's MemoryReactorClock (which
    records who asks to write); ``request_`` read. (channel, transport, peer)."""
    import socket

    from twisted.internet import tcp

    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    ours.setblocking(False)
    peer.setblocking(False)
    channel = cast(Any, env.site).buildProtocol(None)

    class Port:
        _realPortNumber = 8080

    transport = tcp.Server(ours, channel, peer.getsockname(), cast(Any, Port()), 1, env.clock)
    channel.makeConnection(transport)
    channel.dataReceived(request_)
    return channel, transport, peer


def _received(peer: Any) -> bytes:
    got = b""
    try:
        while True:
            more = peer.recv(65536)
            if not more:
                return got
            got += more
    except BlockingIOError:
        return got


def test_a_receiver_that_was_sent_everything_does_not_wait_to_write(env: Env) -> None:
    # Issue 20: a receiver's head goes out at once (send_buffered_now), its
    # body by sendmsg; its transport then stops asking to write, rather than
    # being woken on the reactor's next turn to send nothing.
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    body = bytes(range(256)) * 4
    receiver = _on_a_socket(env, b"GET /leaf HTTP/1.1\r\nHost: x\r\n\r\n")
    sender = _on_a_socket(
        env, b"PUT /leaf HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + body)
    assert receiver[1] not in env.clock.getWriters()
    got = _received(receiver[2])
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\n" + body)
    # The sender's last lines wait for the reactor's turn, as before.
    assert sender[1] in env.clock.getWriters()
    assert _received(sender[2]).startswith(b"HTTP/1.1 200 OK\r\n")
    for channel, transport, peer in (receiver, sender):
        peer.close()  # type: ignore[attr-defined]
        transport.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    env.clock.advance(0)
