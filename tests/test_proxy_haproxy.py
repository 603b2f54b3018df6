"""pipeserver's own HTTP/2 behind real HAProxy passing TLS through
(``mode tcp``), configured as docs/proxies.md's block says.

The block is read from the guide, its timeouts scaled down as in the nginx
test. pipeserver serves an ``ssl:`` listener, so ALPN goes through HAProxy
to it: ``curl --http2`` gets h2 from pipeserver itself, and an HTTP/1.1
client shares the pipe through the same port (on Twisted 25.5, without
ALPN, both speak HTTP/1.1).
"""

from __future__ import annotations

import socket

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
)
from pipeserver.http._twisted import ALPN_SET_PER_CONNECTION
from test_endpoints import run_service, self_signed, services  # noqa: F401 (a fixture)

SIZE = 5 * 1024 * 1024 + 7
#: Twisted 25.5 offers no ALPN (README, Supported versions): HTTP/1.1 there.
H2 = "HTTP/1.1 200 OK" if ALPN_SET_PER_CONNECTION else "HTTP/2 200"


def haproxy_conf(port: int, upstream: int) -> str:
    block = guide_block("haproxy", "mode tcp")
    for directive in ("bind :443", "server pipe1 127.0.0.1:8443", "timeout client 360s",
                      "timeout server 360s"):
        assert directive in block, f"the guide's passthrough block lost {directive!r}"
    block = block.replace("bind :443", f"bind 127.0.0.1:{port}")
    block = block.replace("server pipe1 127.0.0.1:8443", f"server pipe1 127.0.0.1:{upstream}")
    return block.replace("360s", SCALED_TIMEOUT)


def status_line(headers) -> str:
    """The final status line curl -D wrote (past a ``100 Continue``, without
    curl's trailing space)."""
    lines = [head.split(b"\r\n", 1)[0].decode().strip()
             for head in headers.read_bytes().split(b"\r\n\r\n") if head]
    return [line for line in lines if " 100 " not in line + " "][0]


@pytest_twisted.inlineCallbacks
def start_haproxy(procs, tmp_path, upstream: int):
    haproxy = binary("haproxy", "haproxy", "the HAProxy TLS passthrough test")
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(haproxy_conf(port, upstream))
    proc = procs.spawn([haproxy, "-db", "-f", str(conf)], name="haproxy")

    def listening():
        if proc.finished:
            raise AssertionError(proc.describe())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    yield helpers.wait_for(listening, timeout=10, what="HAProxy to listen")
    return port


@pytest_twisted.inlineCallbacks
def test_h2_through_haproxy_tls_passthrough(procs, services, tmp_path):  # noqa: F811
    key, cert = self_signed(str(tmp_path))
    svc, (listening,) = yield run_service(
        services, "--wait-timeout", WAIT_TIMEOUT,
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    server = helpers.Server(svc.site, listening)
    port = yield start_haproxy(procs, tmp_path, listening.getHost().port)
    base = f"https://127.0.0.1:{port}"
    body = tmp_path / "body"
    expected = helpers.make_file(str(body), SIZE, seed=2)

    # An h2 receiver and an h2 sender, each negotiating h2 with pipeserver
    # through HAProxy; then an HTTP/1.1 receiver of an h2 sender.
    for path, receiver_proto, receiver_status in (
        ("/h2", "--http2", H2),
        ("/mixed", "--http1.1", "HTTP/1.1 200 OK"),
    ):
        received, sent = tmp_path / f"r{path[1:]}", tmp_path / f"s{path[1:]}"
        receiver = procs.spawn(
            curl("-f", receiver_proto, "--cacert", cert, "-D", str(received), base + path),
            name=f"receiver {path}",
        )
        yield server.wait_receivers(path, 1)
        sender = procs.spawn(
            curl("-f", "--http2", "--cacert", cert, "-D", str(sent), "-T", "-", base + path),
            stdin=str(body), name=f"sender {path}",
        )
        yield receiver.wait()
        yield sender.wait()
        assert receiver.exit_code == 0, receiver.describe()
        assert sender.exit_code == 0, sender.describe()
        assert receiver.nbytes == SIZE
        assert receiver.sha256 == expected
        assert sender.lines() == [SENDER_LINES[0], "[INFO] 1 receiver(s) has/have been connected.",
                                  *SENDER_LINES[2:]], sender.describe()
        assert status_line(sent) == H2
        assert status_line(received) == receiver_status
    yield server.wait_empty()
