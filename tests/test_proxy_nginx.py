# mypy: disable-error-code="union-attr"
"""pipeserver behind real nginx, configured exactly as docs/proxies.md says.

The nginx block is read from the guide, its timeouts scaled down: the
server waits 6 s (``--wait-timeout``) and the guide's 360 s become 9 s. A
second nginx server with a 2 s ``proxy_read_timeout`` (a scaled-down nginx
default) shows the same wait failing there. Without the guide's
``X-Pipe-Progress: at-end`` nginx stalls a large upload; the header itself
is tested without nginx too.
"""

from __future__ import annotations

import os
import re
import socket

import pytest
import pytest_twisted

import helpers
from helpers import curl
from proxy_support import (
    SCALED_TIMEOUT,
    SENDER_LINES,
    WAIT_TIMEOUT,
    binary,
    free_port,
    guide_block,
    help_sees_the_proxys_host,
    receiver_waits,
    sender_first,
)

SHORT_READ_TIMEOUT = "2s"


def nginx_conf(
    directory: str, upstream: str, port: int, short_port: int, at_end: bool = True
) -> str:
    block = guide_block("nginx")
    for directive in ("listen 80;", "server 127.0.0.1:8080;", "proxy_read_timeout 24h;",
                      "proxy_set_header X-Pipe-Progress at-end;"):
        assert directive in block, f"the guide's nginx block lost {directive!r}"
    block = block.replace("server 127.0.0.1:8080;", f"server {upstream};")
    block = block.replace("360s;", SCALED_TIMEOUT + ";")
    if not at_end:
        block = block.replace("proxy_set_header X-Pipe-Progress at-end;", "")
    guide = block.replace("listen 80;", f"listen 127.0.0.1:{port};")
    # The same server, but with a read timeout shorter than the wait.
    server = guide[re.search(r"^server \{", guide, re.M).start():]
    short = server.replace(f"listen 127.0.0.1:{port};", f"listen 127.0.0.1:{short_port};")
    short = short.replace("proxy_read_timeout 24h;", f"proxy_read_timeout {SHORT_READ_TIMEOUT};")
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
{temp}
{guide}
{short}
}}
"""


@pytest.fixture
def nginx(procs, tmp_path):
    nginx_binary = binary("nginx", "nginx-light", "the nginx reverse-proxy tests")

    @pytest_twisted.inlineCallbacks
    def start(server: helpers.Server, at_end: bool = True):
        directory = str(tmp_path / "nginx")
        os.makedirs(directory, exist_ok=True)
        port, short_port = free_port(), free_port()
        conf = os.path.join(directory, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(directory, server.host, port, short_port, at_end))
        # One process (no master/worker), so killing it at teardown is enough.
        proc = procs.spawn(
            [nginx_binary, "-e", f"{directory}/error.log", "-p", directory, "-c", conf,
             "-g", "daemon off; master_process off;"],
            name="nginx",
        )

        def listening():
            if proc.finished:
                raise AssertionError(proc.describe() + _log(directory))
            for p in (port, short_port):
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
                except OSError:
                    return False
            return True

        yield helpers.wait_for(listening, timeout=10, what="nginx to listen")
        return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{short_port}"

    return start


def _log(directory: str) -> str:
    try:
        with open(os.path.join(directory, "error.log")) as f:
            return "\n" + f.read()[-3000:]
    except OSError:
        return ""


@pytest_twisted.inlineCallbacks
def test_pairs_and_waits_through_nginx(make_server, nginx, procs, tmp_path):
    server = make_server("--wait-timeout", WAIT_TIMEOUT)
    base, short = yield nginx(server)

    yield help_sees_the_proxys_host(base)
    # Sender first: nginx must pass its body on before it has all of it
    # (no request buffering), or the server never sees the sender.
    headers = yield sender_first(server, procs, tmp_path, base)
    assert "\r\nTransfer-Encoding: chunked\r\n" in headers

    # Receiver first, waiting 4 s: longer than a 2 s read timeout allows...
    cut = procs.spawn(curl("-D", "-", short + "/rf"), name="receiver behind 2 s")
    yield server.wait_receivers("/rf", 1)
    yield cut.wait(timeout=10)
    status, _, body = helpers.split_response(bytes(cut.out))
    assert status == "HTTP/1.1 504 Gateway Time-out", cut.describe()
    assert b"nginx" in body  # nginx's page, not pipeserver's 504
    yield server.wait_gone("/rf")

    # ... but not for the guide's settings.
    yield receiver_waits(server, procs, tmp_path, base, 4.0)


@pytest_twisted.inlineCallbacks
def test_64_mib_chunked_through_nginx(make_server, nginx, procs, tmp_path):
    server = make_server("--wait-timeout", WAIT_TIMEOUT)
    base, _ = yield nginx(server)
    size = 64 * 1024 * 1024
    body = tmp_path / "body"
    expected = helpers.make_file(str(body), size, seed=64)
    receiver = procs.spawn(curl("-f", base + "/big"), keep=False)
    yield server.wait_receivers("/big", 1)
    sender = procs.spawn(curl("-f", "-T", "-", base + "/big"), stdin=str(body))
    yield sender.wait(timeout=120)
    yield receiver.wait(timeout=120)
    assert sender.exit_code == 0, sender.describe()
    assert receiver.exit_code == 0, receiver.describe()
    assert receiver.nbytes == size
    assert receiver.sha256 == expected
    assert sender.lines()[-1] == SENDER_LINES[-1]


@pytest.mark.parametrize("at_end", [False, True], ids=["without-at-end", "guide"])
@pytest_twisted.inlineCallbacks
def test_a_receiver_pausing_stalls_the_upload_without_at_end(
    make_server, nginx, procs, tmp_path, at_end
):
    """Why the guide needs X-Pipe-Progress: once nginx has passed the
    sender's 200 on, it stops writing the body for good the first time
    pipeserver's socket is full. A receiver that pauses for 2 s fills it
    (backpressure). Without the header the upload never resumes; with it,
    it does. If nginx ever stops doing that, this fails: the header could go.
    (A receiver that keeps up may see the upload through either way.)"""
    server = make_server("--wait-timeout", WAIT_TIMEOUT)
    base, _ = yield nginx(server, at_end=at_end)
    size = 64 * 1024 * 1024
    body = tmp_path / "body"
    expected = helpers.make_file(str(body), size, seed=64)
    out = str(tmp_path / "out")
    receiver, sink = procs.pipeline(
        curl("-f", base + "/stall"), ["sh", "-c", f"sleep 2; exec cat > {out}"]
    )
    yield server.wait_receivers("/stall", 1)
    sender = procs.spawn(curl("-f", "-T", "-", base + "/stall"), stdin=str(body))
    if at_end:
        yield receiver.wait(timeout=60)
        yield sink.wait(timeout=60)
        yield sender.wait(timeout=60)
        assert receiver.exit_code == 0 and sender.exit_code == 0, sender.describe()
        assert helpers.file_sha256(out) == expected
        return
    yield helpers.file_has(out, 1)
    seen = []

    def stalled():
        assert not receiver.finished, receiver.describe()
        seen.append(os.path.getsize(out))
        return len(seen) > 8 and seen[-1] == seen[-9]  # no progress for 2 s

    yield helpers.wait_for(stalled, timeout=10, interval=0.25, what="the upload to stall")
    assert seen[-1] < size
    assert not sender.finished
    sender.kill()
    receiver.kill()
    sink.kill()
    yield server.wait_empty(timeout=10)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("at_end", [False, True])
@pytest_twisted.inlineCallbacks
def test_progress_at_end_holds_the_senders_response(make_server, procs, at_end):
    server = make_server()
    sender = socket.create_connection(("127.0.0.1", server.portnum))
    sender.setblocking(False)
    header = b"X-Pipe-Progress: at-end\r\n" if at_end else b""
    sender.sendall(
        b"PUT /ae HTTP/1.1\r\nHost: pipe\r\nTransfer-Encoding: chunked\r\n"
        + header + b"\r\n" + _chunk(b"hello ")
    )
    yield server.wait_sender("/ae")
    receiver = procs.spawn(curl("-f", server.url("/ae")))
    yield helpers.has_received(receiver, 6)
    # The transfer is under way: the server has decided by now whether the
    # sender's response starts (its head and lines) or waits for the end.
    request = server.pipe("/ae").sender.request
    early = bytearray()

    def read_early() -> bytes:
        try:
            early.extend(sender.recv(65536))
        except BlockingIOError:
            pass
        return bytes(early)

    if at_end:
        assert not request.startedWriting
        assert read_early() == b""
    else:
        assert request.startedWriting
        yield helpers.wait_for(lambda: b"\r\n\r\n" in read_early(), what="the sender's head")
        assert early.startswith(b"HTTP/1.1 200 OK\r\n")
    sender.sendall(_chunk(b"world") + b"0\r\n\r\n")
    yield receiver.wait()
    assert receiver.out == b"hello world"
    response = bytearray(bytes(early))

    def complete():
        try:
            data = sender.recv(65536)
        except BlockingIOError:
            return False
        response.extend(data)
        return not data or response.endswith((b"successfully.\n", b"\r\n0\r\n\r\n"))

    yield helpers.wait_for(complete, what="the sender's response")
    sender.close()
    status, headers, body = helpers.split_response(bytes(response))
    assert status == "HTTP/1.1 200 OK"
    if at_end:
        assert helpers.header_values(headers, "Content-Length") == [str(len(body))]
        assert body.decode().splitlines() == [
            SENDER_LINES[0], "[INFO] A receiver was connected.", *SENDER_LINES[2:]]
    else:
        assert helpers.header_values(headers, "Transfer-Encoding") == ["chunked"]
        assert body.endswith(b"successfully.\n\r\n0\r\n\r\n")
