"""httpx with ``http2=True`` as a sender (issue 19, item 2; SPEC §11).

httpcore mishandles a stream window driven negative (encode/httpcore#1082),
which a SETTINGS shrink after the client has sent does: the server never
shrinks one. A real httpx sender (tests/clients/httpx_send.py, in its own
process: sync and async, TLS and h2c) moves 16 MiB to a curl receiver in
both orders, checked by sha256; and a slow HTTP/2 receiver still holds an
httpx sender back.
"""

from __future__ import annotations

import os
import sys

import pytest
import pytest_twisted

import helpers
from helpers import curl, make_file, sleep, wait_for
from test_endpoints import run_service, self_signed, services  # noqa: F401  (fixture)

pytest.importorskip("httpx")
pytest.importorskip("h2")

MiB = 1024 * 1024
SENDER = os.path.join(os.path.dirname(__file__), "clients", "httpx_send.py")
SLOW_RECEIVER = os.path.join(os.path.dirname(__file__), "clients", "h2_slow_receive.py")
SUCCESS = "[INFO] All receiver(s) was/were received successfully."


def httpx_sender(procs, mode: str, kind: str, url: str, body: str, cert=None):
    argv = [sys.executable, SENDER, mode, kind, url, body] + ([cert] if cert else [])
    return procs.spawn(argv, name=f"httpx {mode} {kind} sender")


@pytest.mark.parametrize("order", ["sender-first", "receiver-first"])
@pytest.mark.parametrize("scheme", ["h2c", "tls"])
@pytest.mark.parametrize("mode,kind", [("sync", "bytes"), ("async", "stream")])
@pytest_twisted.inlineCallbacks
def test_httpx_http2_sender(procs, services, tmp_path, order, scheme, mode, kind):
    key, cert = self_signed(str(tmp_path))
    svc, (tcp, tls) = yield run_service(
        services,
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    from pipeserver.http._twisted import ALPN_SET_PER_CONNECTION

    if scheme == "tls" and ALPN_SET_PER_CONNECTION:
        pytest.skip("this Twisted offers no ALPN (h2 by prior knowledge only)")
    if scheme == "h2c":
        url = f"http://127.0.0.1:{tcp.getHost().port}/httpx"
        receive = curl("-f", "--http2-prior-knowledge", url)
    else:
        url = f"https://127.0.0.1:{tls.getHost().port}/httpx"
        receive = curl("-f", "--http2", "--cacert", cert, url)
    body = str(tmp_path / "body")
    expected = make_file(body, 16 * MiB, seed=19)
    server = helpers.Server(svc.site, tcp, svc.server)
    if order == "sender-first":
        sender = httpx_sender(procs, mode, kind, url, body, cert if scheme == "tls" else None)
        yield server.wait_sender("/httpx")
        yield sleep(0.3)  # it sends what its window allows, and waits
        receiver = procs.spawn(receive, name="curl receiver", keep=False)
    else:
        receiver = procs.spawn(receive, name="curl receiver", keep=False)
        yield server.wait_receivers("/httpx", 1)
        sender = httpx_sender(procs, mode, kind, url, body, cert if scheme == "tls" else None)
    yield receiver.wait(timeout=120)
    yield sender.wait(timeout=120)
    assert sender.exit_code == 0, sender.describe()
    lines = sender.lines()
    assert lines[:2] == ["HTTP/2", "200"], sender.describe()
    assert lines[-1] == SUCCESS, sender.describe()
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_a_slow_h2_receiver_holds_an_httpx_sender_back(server, procs, tmp_path):
    size = 24 * MiB
    body = str(tmp_path / "body")
    expected = make_file(body, size, seed=20)
    out = str(tmp_path / "out")
    # 4 MiB/s over h2c with curl's windows, its socket's receive buffer
    # pinned: curl's is autotuned up to tcp_rmem's maximum (32 MiB here),
    # and on a loaded machine the kernel then took the body, not the server.
    receiver = procs.spawn(
        [sys.executable, SLOW_RECEIVER, server.url("/slow"), out, str(4 * MiB), str(256 * 1024)],
        name="slow h2 receiver",
    )
    yield server.wait_receivers("/slow", 1)
    sender = httpx_sender(procs, "async", "stream", server.url("/slow"), body)
    yield wait_for(lambda: server.pipe("/slow") is not None and server.pipe("/slow").bytes > 0,
                   what="the pipe to stream")

    def got() -> int:
        try:
            return os.path.getsize(out)
        except FileNotFoundError:
            return 0

    pipe = server.pipe("/slow")
    lead = held = 0
    while not receiver.finished:
        upload = pipe.sender.request if pipe.sender is not None else None
        if upload is not None:
            lead = max(lead, upload.bodyBytes - got())
        held = max(held, server.registry.bytesHeld())
        if got() < 8 * MiB:
            assert not sender.finished, f"the sender was not held back: {sender.describe()}"
        yield sleep(0.05)
    yield sender.wait(timeout=60)
    print(f"slow h2 receiver, httpx sender: the server took at most {lead} bytes ahead, held {held}")
    assert receiver.exit_code == 0 and helpers.file_sha256(out) == expected, receiver.describe()
    assert sender.exit_code == 0 and sender.lines()[-1] == SUCCESS, sender.describe()
    # Ahead of the receiver by the buffers between (kernel, windows), not the body.
    assert lead < 8 * MiB, lead
    assert held < 1 * MiB, held
    yield server.wait_empty()
