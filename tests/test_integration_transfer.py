# mypy: disable-error-code="assignment"
"""End-to-end transfers through a real server with curl clients (SPEC §1, §4, §5)."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import defer

from helpers import curl, file_sha256, header_values, make_file, split_response

SENDER_FIRST = "sender-first"
RECEIVER_FIRST = "receiver-first"


def progress(n: int, receivers_first: int = 0, later: int = None) -> str:
    """The sender's exact output for a clean transfer (SPEC §4)."""
    if later is None:
        later = n - receivers_first
    lines = [f"[INFO] Waiting for {n} receiver(s)..."]
    if receivers_first:
        lines.append(f"[INFO] {receivers_first} receiver(s) has/have been connected.")
    lines += ["[INFO] A receiver was connected."] * later
    lines += [
        f"[INFO] Start sending to {n} receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]
    return "".join(line + "\n" for line in lines)


def sender_argv(method: str, body: str, url: str, path: str):
    """curl arguments and stdin for a sender. body: 'chunked' reads stdin
    (``-T -``), 'length' sends the file with a Content-Length."""
    if body == "chunked":
        argv = curl("-T", "-", url)
        if method == "POST":
            argv[1:1] = ["-X", "POST"]
        return argv, path
    if method == "PUT":
        return curl("-T", path, url), None
    return curl("--data-binary", "@" + path, url), None


@pytest.mark.parametrize("order", [SENDER_FIRST, RECEIVER_FIRST])
@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("body", ["chunked", "length"])
@pytest_twisted.inlineCallbacks
def test_transfer(server, procs, tmp_path, order, method, body):
    src = str(tmp_path / "src")
    expected = make_file(src, 3 * 1024 * 1024 + 17)
    path = "/t"
    argv, stdin = sender_argv(method, body, server.url(path), src)
    if order == SENDER_FIRST:
        sender = procs.spawn(argv, stdin=stdin, name="sender")
        yield server.wait_sender(path)
        receiver = procs.spawn(curl(server.url(path)), name="receiver", keep=False)
    else:
        receiver = procs.spawn(curl(server.url(path)), name="receiver", keep=False)
        yield server.wait_receivers(path, 1)
        sender = procs.spawn(argv, stdin=stdin, name="sender")
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    assert receiver.nbytes == os.path.getsize(src)
    assert receiver.sha256 == expected
    first = 1 if order == RECEIVER_FIRST else 0
    assert sender.text == progress(1, receivers_first=first)
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_three_receivers_get_identical_bytes(server, procs, tmp_path):
    src = str(tmp_path / "src")
    expected = make_file(src, 5 * 1024 * 1024 + 3, seed=3)
    url = server.url("/three?n=3")
    receivers = [procs.spawn(curl(url), name=f"receiver{i}", keep=False) for i in range(2)]
    yield server.wait_receivers("/three", 2)
    sender = procs.spawn(curl("-T", "-", url), stdin=src, name="sender")
    yield server.wait_sender("/three")
    receivers.append(procs.spawn(curl(url), name="receiver2", keep=False))
    for receiver in receivers:
        yield receiver.wait()
        assert receiver.exit_code == 0, receiver.describe()
        assert receiver.sha256 == expected
    yield sender.wait()
    assert sender.exit_code == 0, sender.describe()
    assert sender.text == progress(3, receivers_first=2, later=1)


@pytest_twisted.inlineCallbacks
def test_64_mib(server, procs, tmp_path):
    src = str(tmp_path / "big")
    expected = make_file(src, 64 * 1024 * 1024, seed=64)
    url = server.url("/big")
    receiver = procs.spawn(curl(url), name="receiver", keep=False)
    yield server.wait_receivers("/big", 1)
    sender = procs.spawn(curl("-T", "-", url), stdin=src, name="sender")
    yield receiver.wait(timeout=90)
    yield sender.wait(timeout=30)
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    assert receiver.nbytes == 64 * 1024 * 1024
    assert receiver.sha256 == expected
    assert sender.text == progress(1, receivers_first=1)


@pytest.mark.parametrize("order", [SENDER_FIRST, RECEIVER_FIRST])
@pytest_twisted.inlineCallbacks
def test_http10_sender(server, procs, tmp_path, order):
    """An HTTP/1.0 sender gets every progress line in one response at the end."""
    src = str(tmp_path / "src")
    expected = make_file(src, 1024 * 1024 + 5, seed=10)
    url = server.url("/old")
    sender_cmd = curl("-0", "-D", "-", "--data-binary", "@" + src, url)
    if order == SENDER_FIRST:
        sender = procs.spawn(sender_cmd, name="sender")
        yield server.wait_sender("/old")
        receiver = procs.spawn(curl(url), name="receiver", keep=False)
    else:
        receiver = procs.spawn(curl(url), name="receiver", keep=False)
        yield server.wait_receivers("/old", 1)
        sender = procs.spawn(sender_cmd, name="sender")
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    assert receiver.sha256 == expected
    status, headers, body = split_response(bytes(sender.out))
    assert status.startswith("HTTP/1.") and status.split()[1] == "200", status
    assert header_values(headers, "Content-Type") == ["text/plain"]
    text = progress(1, receivers_first=1 if order == RECEIVER_FIRST else 0)
    assert header_values(headers, "Content-Length") == [str(len(text.encode()))]
    assert body.decode() == text


@pytest.mark.parametrize("body", ["chunked", "length"])
@pytest_twisted.inlineCallbacks
def test_http10_receiver(server, procs, tmp_path, body):
    src = str(tmp_path / "src")
    size = 2 * 1024 * 1024 + 1
    expected = make_file(src, size, seed=11)
    url = server.url("/old")
    receiver = procs.spawn(curl("-0", "-D", "-", url), name="receiver")
    yield server.wait_receivers("/old", 1)
    if body == "chunked":
        sender = procs.spawn(curl("-T", "-", url), stdin=src, name="sender")
    else:
        sender = procs.spawn(curl("-T", src, url), name="sender")
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    status, headers, data = split_response(bytes(receiver.out))
    assert status.split()[1] == "200", status
    assert header_values(headers, "Transfer-Encoding") == []
    if body == "length":
        assert header_values(headers, "Content-Length") == [str(size)]
    else:
        assert header_values(headers, "Content-Length") == []
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == expected
    assert sender.text == progress(1, receivers_first=1)


ALWAYS = {
    "date", "server", "access-control-allow-origin", "x-robots-tag",
    "x-content-type-options", "content-security-policy",
}


@defer.inlineCallbacks
def _headers_case(server, procs, sender_args, stdin=None):
    """Run one transfer; return the receiver's header list and body."""
    url = server.url("/h")
    receiver = procs.spawn(curl("-D", "-", url), name="receiver")
    yield server.wait_receivers("/h", 1)
    sender = procs.spawn(curl(*sender_args, url), stdin=stdin, name="sender")
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    status, headers, body = split_response(bytes(receiver.out))
    assert status == "HTTP/1.1 200 OK"
    return headers, body


@pytest_twisted.inlineCallbacks
def test_receiver_headers_with_length_and_metadata(server, procs, tmp_path):
    src = str(tmp_path / "page.html")
    expected = make_file(src, 100_001, seed=5)
    headers, body = yield _headers_case(
        server,
        procs,
        [
            "-T", src,
            "-H", "Content-Type: text/html; charset=utf-8",
            "-H", 'Content-Disposition: attachment; filename="page.html"',
            "-H", "X-Piping: first",
            "-H", "X-Secret: s3cret",
            "-H", "X-Piping: second=2; third",
            "-H", "Cookie: a=b",
            "-H", "Authorization: Basic Zm9vOmJhcg==",
        ],
    )
    assert hashlib.sha256(body).hexdigest() == expected
    names = {name.lower() for name, _ in headers}
    assert names == ALWAYS | {
        "content-length",
        "content-type",
        "content-disposition",
        "x-piping",
        "access-control-expose-headers",
    }, headers
    assert header_values(headers, "Content-Length") == ["100001"]
    assert header_values(headers, "Content-Type") == ["text/plain; charset=utf-8"]
    assert header_values(headers, "Content-Disposition") == [
        'attachment; filename="page.html"'
    ]
    assert header_values(headers, "X-Piping") == ["first", "second=2; third"]
    assert header_values(headers, "Access-Control-Allow-Origin") == ["*"]
    assert header_values(headers, "X-Robots-Tag") == ["none"]
    assert header_values(headers, "Access-Control-Expose-Headers") == ["X-Piping"]
    assert header_values(headers, "X-Secret") == []
    assert header_values(headers, "Transfer-Encoding") == []
    assert all("s3cret" not in value for _, value in headers)


@pytest_twisted.inlineCallbacks
def test_receiver_headers_chunked_without_metadata(server, procs, tmp_path):
    src = str(tmp_path / "src")
    expected = make_file(src, 70_000, seed=6)
    headers, body = yield _headers_case(
        server, procs, ["-T", "-", "-H", "X-Secret: s3cret"], stdin=src
    )
    assert hashlib.sha256(body).hexdigest() == expected
    names = {name.lower() for name, _ in headers}
    assert names == ALWAYS | {"transfer-encoding"}, headers
    assert header_values(headers, "Transfer-Encoding") == ["chunked"]
    assert header_values(headers, "Content-Type") == []
    assert header_values(headers, "Access-Control-Expose-Headers") == []
    assert header_values(headers, "Access-Control-Allow-Origin") == ["*"]
    assert header_values(headers, "X-Robots-Tag") == ["none"]


@pytest.mark.parametrize(
    "sent, received",
    [
        ("text/html", "text/plain"),
        ("TEXT/HTML ;charset=ISO-8859-1", "text/plain;charset=ISO-8859-1"),
        ("application/json; charset=utf-8", "application/json; charset=utf-8"),
        ("text/plain", "text/plain"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_receiver_content_type(server, procs, tmp_path, sent, received):
    src = str(tmp_path / "src")
    make_file(src, 1000, seed=7)
    headers, body = yield _headers_case(
        server, procs, ["--data-binary", "@" + src, "-H", "Content-Type: " + sent]
    )
    assert len(body) == 1000
    assert header_values(headers, "Content-Type") == [received]
    assert header_values(headers, "Content-Length") == ["1000"]


@pytest_twisted.inlineCallbacks
def test_path_identity_and_reuse(server, procs, tmp_path):
    """``/e`` and ``/e/`` are two pipes; the query string is not part of the
    path; a path can be used again as soon as its transfer is over."""
    srcs = {}
    for i, name in enumerate(["a", "b", "c"]):
        srcs[name] = str(tmp_path / name)
        make_file(srcs[name], 100_000 + i, seed=20 + i)
    to_e = procs.spawn(curl(server.url("/e?x=1")), name="receiver /e")
    to_e_slash = procs.spawn(curl(server.url("/e/")), name="receiver /e/")
    yield server.wait_receivers("/e", 1)
    yield server.wait_receivers("/e/", 1)
    send_e = procs.spawn(curl("-T", srcs["a"], server.url("/e?y=2")), name="sender /e")
    # (curl -T FILE would append the file's name to a URL ending in "/".)
    send_e_slash = procs.spawn(
        curl("-T", "-", server.url("/e/")), stdin=srcs["b"], name="sender /e/"
    )
    for proc in (to_e, to_e_slash, send_e, send_e_slash):
        yield proc.wait()
        assert proc.exit_code == 0, proc.describe()
    assert to_e.sha256 == file_sha256(srcs["a"])
    assert to_e_slash.sha256 == file_sha256(srcs["b"])
    # At once again on /e.
    yield server.wait_empty()
    again = procs.spawn(curl(server.url("/e")), name="receiver again")
    yield server.wait_receivers("/e", 1)
    send_again = procs.spawn(curl("-T", srcs["c"], server.url("/e")), name="sender again")
    yield again.wait()
    yield send_again.wait()
    assert again.exit_code == 0 and again.sha256 == file_sha256(srcs["c"])
    assert send_again.text == progress(1, receivers_first=1)
