"""What the server's response heads say about it and pass on from senders:
no version in Server, nosniff and a CSP sandbox on everything a receiver
gets (its 200 and its errors), and no control byte from a sender's headers
or form part headers (SPEC §5)."""

from __future__ import annotations

import pytest
import pytest_twisted

from helpers import curl, header_values, http, sha256, split_response

SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'"


def receiver_headers(proc):
    status, headers, body = split_response(bytes(proc.out))
    assert status == "HTTP/1.1 200 OK", proc.describe()
    return [(n, v) for n, v in headers if n != "Date"], body


@pytest_twisted.inlineCallbacks
def test_receiver_and_sender_heads(server, procs, tmp_path):
    payload = tmp_path / "payload"
    payload.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    receiver = procs.spawn(curl("-i", server.url("/p")), name="receiver")
    yield server.wait_receivers("/p", 1)
    sender = procs.spawn(
        curl(
            "-i", "-T", str(payload),
            "-H", "Content-Type: image/svg+xml",
            "-H", "X-Piping: one",
            "-H", "Content-Disposition: inline",
            server.url("/p"),
        ),
        name="sender",
    )
    yield receiver.wait()
    yield sender.wait()
    headers, body = receiver_headers(receiver)
    assert body == payload.read_bytes()
    assert headers == [
        ("Server", "pipeserver"),
        ("Content-Length", str(len(body))),
        ("Content-Type", "image/svg+xml"),
        ("Content-Disposition", "inline"),
        ("X-Piping", "one"),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Expose-Headers", "X-Piping"),
        ("X-Robots-Tag", "none"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", SANDBOX),
    ]
    assert sender.exit_code == 0, sender.describe()
    status, sent, _ = split_response(sender.text.split("\r\n\r\n", 1)[1].encode())
    assert status == "HTTP/1.1 200 OK"
    assert header_values(sent, "Server") == ["pipeserver"]
    assert header_values(sent, "X-Content-Type-Options") == ["nosniff"]
    assert header_values(sent, "Content-Security-Policy") == [SANDBOX]


@pytest_twisted.inlineCallbacks
def test_a_receivers_errors_are_sandboxed_too(make_server):
    server = make_server("--wait-timeout", "0.2")
    for method, url, status in [
        ("GET", server.url("/p"), 504),  # no sender in time
        ("GET", server.url("/p?n=x"), 400),
        ("HEAD", server.url("/p"), 200),
    ]:
        reply = yield http(method, url)
        assert reply.code == status
        assert reply.one("Server") == "pipeserver"
        assert reply.one("X-Content-Type-Options") == "nosniff"
        assert reply.one("Content-Security-Policy") == SANDBOX


@pytest.mark.parametrize(
    "sent, received",
    [
        ("text/plain, text/html", "text/plain, text/plain"),
        ("x/x,text/html; charset=utf-8", "x/x,text/plain; charset=utf-8"),
        ("TEXT/HTML ; charset=utf-8", "text/plain; charset=utf-8"),
        ("text/html-like", "text/html-like"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_every_html_in_a_content_type_list_is_served_as_text(server, procs, sent, received):
    receiver = procs.spawn(curl("-i", server.url("/p")), name="receiver")
    yield server.wait_receivers("/p", 1)
    sender = procs.spawn(
        curl("--data-binary", "<b>x</b>", "-H", f"Content-Type: {sent}", server.url("/p"))
    )
    yield receiver.wait()
    yield sender.wait()
    headers, body = receiver_headers(receiver)
    assert header_values(headers, "Content-Type") == [received]
    assert body == b"<b>x</b>"


@pytest_twisted.inlineCallbacks
def test_control_bytes_in_a_senders_headers_are_not_passed_on(server, procs):
    """Twisted refuses NUL, CR and LF in a request's header values; the
    other control bytes reached receivers. A value with one is dropped."""
    receiver = procs.spawn(curl("-i", server.url("/p")), name="receiver")
    yield server.wait_receivers("/p", 1)
    sender = procs.spawn(
        curl(
            "--data-binary", "data",
            "-H", "Content-Type: text/plain\x1b[2J",
            "-H", "Content-Disposition: attachment; filename=\"a\x7f.txt\"",
            "-H", "X-Piping: first",
            "-H", "X-Piping: se\x01cond",
            "-H", "X-Piping: th\tird",
            server.url("/p"),
        )
    )
    yield receiver.wait()
    yield sender.wait()
    assert sender.exit_code == 0, sender.describe()
    headers, body = receiver_headers(receiver)
    assert body == b"data"
    assert header_values(headers, "Content-Type") == []
    assert header_values(headers, "Content-Disposition") == []
    assert header_values(headers, "X-Piping") == ["first", "th\tird"]


def form(part_headers: bytes, data: bytes) -> bytes:
    return (
        b"--XyZ\r\n" + part_headers + b"\r\n\r\n" + data + b"\r\n--XyZ--\r\n"
    )


@pytest.mark.parametrize(
    "part_headers",
    [
        b'Content-Disposition: form-data; name="f"; filename="a.txt\x00"\r\n'
        b"Content-Type: text/plain\x00",
        b'Content-Disposition: form-data; name="f"\rX-Forged: 1\r\n'
        b"Content-Type: text/plain\nSet-Cookie: a=b",
        b'Content-Disposition: form-data; name="f\x0b"\r\n'
        b"Content-Type: text/plain\x1f",
    ],
    ids=["nul", "bare-cr-lf", "other-controls"],
)
@pytest_twisted.inlineCallbacks
def test_control_bytes_in_a_form_parts_headers_are_not_passed_on(
    server, procs, tmp_path, part_headers
):
    data = bytes(range(256)) * 40
    body = tmp_path / "form"
    body.write_bytes(form(part_headers, data))
    receiver = procs.spawn(curl("-i", server.url("/p")), name="receiver")
    yield server.wait_receivers("/p", 1)
    sender = procs.spawn(
        curl(
            "--data-binary", f"@{body}",
            "-H", "Content-Type: multipart/form-data; boundary=XyZ",
            server.url("/p"),
        )
    )
    yield receiver.wait()
    yield sender.wait()
    assert sender.exit_code == 0, sender.describe()
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    headers, got = receiver_headers(receiver)
    assert sha256(got) == sha256(data)
    names = [n.lower() for n, _ in headers]
    assert "content-type" not in names
    assert "content-disposition" not in names
    assert "x-forged" not in names and "set-cookie" not in names
    raw = bytes(receiver.out).split(b"\r\n\r\n", 1)[0]
    assert not any(c < 0x20 and c not in (0x09, 0x0D, 0x0A) or c == 0x7F for c in raw), raw
