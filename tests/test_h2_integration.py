"""HTTP/2 end to end (SPEC §11, issue 12 items 1 and 2): negotiation on
tcp:, unix: and ssl: listeners, parties on HTTP/1.1 and HTTP/2 in one pipe,
and a sender and its receiver on one h2 connection.

curl 7.88 speaks h2 with prior knowledge (``--http2-prior-knowledge``) and
over TLS with ALPN (``--http2``), but cannot multiplex an upload on one
connection (docs/HTTP2.md): the one-connection tests use tests/h2_support.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import pytest_twisted

import helpers
from abuse_support import RawClient, connect, parse_responses
from h2_support import h2clients  # noqa: F401  (fixture)
from helpers import curl, file_sha256, make_file
from test_endpoints import run_service, self_signed, services  # noqa: F401  (fixture)
from pipeserver.http._twisted import ALPN_SET_PER_CONNECTION

#: Twisted 25.5 offers no ALPN (channel.PipeSite): there h2 is prior knowledge only.
needs_alpn = pytest.mark.skipif(
    ALPN_SET_PER_CONNECTION, reason="this Twisted offers no ALPN (h2 by prior knowledge only)"
)

MiB = 1024 * 1024
H2C = "--http2-prior-knowledge"
SUCCESS = "[INFO] All receiver(s) was/were received successfully."
RECEIVER_FIRST = [
    "[INFO] Waiting for 1 receiver(s)...",
    "[INFO] 1 receiver(s) has/have been connected.",
    "[INFO] Start sending to 1 receiver(s)!",
    "[INFO] Sent successfully!",
    SUCCESS,
]
SENDER_FIRST = [
    "[INFO] Waiting for 1 receiver(s)...",
    "[INFO] A receiver was connected.",
    "[INFO] Start sending to 1 receiver(s)!",
    "[INFO] Sent successfully!",
    SUCCESS,
]


def version_of(proc) -> str:
    """What ``-w '%{http_version}'`` printed (the body went to a file)."""
    return proc.text.strip()


@pytest_twisted.inlineCallbacks
def curl_transfer(procs, tmp_path, url, size, receiver_args, sender_args, name="t"):
    """A receiver first, then a ``-T -`` sender, each curl with its own
    options; both write to files and print their HTTP version. Returns
    (receiver, sender, expected sha256, receiver's file, sender's file)."""
    body = str(tmp_path / f"{name}.body")
    expected = make_file(body, size, seed=size % 1000)
    got, said = str(tmp_path / f"{name}.got"), str(tmp_path / f"{name}.said")
    receiver = procs.spawn(
        curl("-f", *receiver_args, "-o", got, "-w", "%{http_version}", url), name="receiver"
    )
    sender = procs.spawn(
        curl("-f", *sender_args, "-T", "-", "-o", said, "-w", "%{http_version}", url),
        stdin=body,
        name="sender",
    )
    yield receiver.wait(timeout=60)
    yield sender.wait(timeout=60)
    return receiver, sender, expected, got, said


def lines_of(path: str):
    with open(path, "rb") as f:
        return f.read().decode().splitlines()


# ---------------------------------------------------------------- negotiation


@pytest_twisted.inlineCallbacks
def test_prior_knowledge_on_tcp(server, procs, tmp_path):
    size = 5 * MiB + 11
    receiver, sender, expected, got, said = yield curl_transfer(
        procs, tmp_path, server.url("/pk"), size, [H2C], [H2C]
    )
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    assert version_of(receiver) == "2" and version_of(sender) == "2"
    assert file_sha256(got) == expected
    assert lines_of(said)[-2:] == ["[INFO] Sent successfully!", SUCCESS]
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_prior_knowledge_on_unix(procs, services, tmp_path):
    directory = tempfile.mkdtemp(prefix="pipe-", dir="/tmp")
    try:
        sock = os.path.join(directory, "h2.sock")
        svc, _ = yield run_service(services, "--listen", f"unix:{sock}")
        unix = ["--unix-socket", sock, H2C]
        receiver, sender, expected, got, said = yield curl_transfer(
            procs, tmp_path, "http://pipe/unix", 3 * MiB + 5, unix, unix
        )
        assert receiver.exit_code == 0, receiver.describe()
        assert sender.exit_code == 0, sender.describe()
        assert version_of(receiver) == "2" and version_of(sender) == "2"
        assert file_sha256(got) == expected
        assert lines_of(said)[-1] == SUCCESS
        version = procs.spawn(curl("-f", *unix, "http://pipe/version"))
        yield version.wait()
        assert version.exit_code == 0, version.describe()
        assert version.text == __import__("pipeserver").__version__ + "\n"
        yield svc.stopService()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.inlineCallbacks
def tls_service(services, tmp_path, *extra):
    """A service with a tcp: and an ssl: listener on one site; returns
    (service, helpers.Server on the tcp port, https base url, cert path)."""
    key, cert = self_signed(str(tmp_path))
    svc, (tcp, tls) = yield run_service(
        services,
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        *extra,
    )
    server = helpers.Server(svc.site, tcp, svc.server)
    return svc, server, tls.getHost().port, cert


@needs_alpn
@pytest_twisted.inlineCallbacks
def test_alpn_h2_and_http11_on_ssl(procs, services, tmp_path, h2clients):
    svc, server, tls_port, cert = yield tls_service(services, tmp_path)
    base = f"https://127.0.0.1:{tls_port}"
    h2 = ["--http2", "--cacert", cert]
    receiver, sender, expected, got, said = yield curl_transfer(
        procs, tmp_path, base + "/alpn", 4 * MiB + 3, h2, h2, name="h2"
    )
    assert receiver.exit_code == 0 and sender.exit_code == 0, receiver.describe() + sender.describe()
    assert (version_of(receiver), version_of(sender)) == ("2", "2")
    assert file_sha256(got) == expected
    assert lines_of(said)[-1] == SUCCESS

    h1 = ["--http1.1", "--cacert", cert]
    receiver, sender, expected, got, said = yield curl_transfer(
        procs, tmp_path, base + "/alpn", 2 * MiB + 1, h1, h1, name="h1"
    )
    assert receiver.exit_code == 0 and sender.exit_code == 0, receiver.describe() + sender.describe()
    assert (version_of(receiver), version_of(sender)) == ("1.1", "1.1")
    assert file_sha256(got) == expected

    # Our own client offers h2 only: the server picks it.
    client = yield h2clients.h2tls(tls_port, cert)
    version = client.get("/version")
    yield version.wait()
    assert client.alpn == b"h2"
    assert (version.status, version.ended) == (200, True), version.describe()
    assert version.text == __import__("pipeserver").__version__ + "\n"
    client.close()
    yield client.wait_closed()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_upgrade_h2c_is_answered_as_http11(server, procs):
    # curl --http2 on http:// asks to upgrade (Upgrade: h2c, HTTP2-Settings).
    proc = procs.spawn(curl("-f", "--http2", "-D", "-", "-w", "\n%{http_version}",
                            server.url("/version")))
    yield proc.wait()
    assert proc.exit_code == 0, proc.describe()
    assert proc.lines()[-1] == "1.1", proc.describe()
    assert proc.text.startswith("HTTP/1.1 200 OK\r\n"), proc.describe()
    assert "101" not in proc.text.splitlines()[0]
    # The same by hand, with a body: no 101, one HTTP/1.1 response.
    client: RawClient = yield connect(server.portnum)
    client.send(
        b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    yield client.wait_closed()
    [response] = parse_responses(bytes(client.data))
    assert response.status_line == "HTTP/1.1 200 OK", bytes(client.data[:300])
    assert response.body == (__import__("pipeserver").__version__ + "\n").encode()


@pytest_twisted.inlineCallbacks
def test_h2_preface_is_not_a_bad_request(server, h2clients):
    """Today's server answers the preface with 400: an h2 client gets no
    SETTINGS and sees an HTTP/1.1 answer as a protocol error."""
    client = yield h2clients.h2c(server.portnum, ready=False)
    yield helpers.wait_for(
        lambda: client.remote_settings or client.protocol_error or client.is_closed,
        what="the server's first frames",
    )
    assert client.protocol_error is None, client.protocol_error
    assert not client.is_closed
    assert client.remote_settings, "no SETTINGS from the server"
    client.close()
    yield client.wait_closed()


# ---------------------------------------------------------------- one pipe, any protocol


@needs_alpn
@pytest_twisted.inlineCallbacks
def test_http11_sender_to_h2_tls_http11_tls_and_h2c_receivers(procs, services, tmp_path):
    svc, server, tls_port, cert = yield tls_service(services, tmp_path)
    size = 6 * MiB + 7
    body = str(tmp_path / "body")
    expected = make_file(body, size, seed=3)
    tls = f"https://127.0.0.1:{tls_port}/mix?n=3"
    plain = server.url("/mix?n=3")
    outs = {name: str(tmp_path / name) for name in ("h2tls", "h1tls", "h2c")}
    receivers = {
        "h2tls": procs.spawn(curl("-f", "--http2", "--cacert", cert, "-o", outs["h2tls"],
                                  "-w", "%{http_version}", tls), name="h2 tls receiver"),
        "h1tls": procs.spawn(curl("-f", "--http1.1", "--cacert", cert, "-o", outs["h1tls"],
                                  "-w", "%{http_version}", tls), name="http/1.1 tls receiver"),
        "h2c": procs.spawn(curl("-f", H2C, "-o", outs["h2c"], "-w", "%{http_version}", plain),
                           name="h2c receiver"),
    }
    yield server.wait_receivers("/mix", 3)
    sender = procs.spawn(curl("-f", "--http1.1", "-T", "-", plain), stdin=body, name="sender")
    for proc in receivers.values():
        yield proc.wait(timeout=60)
    yield sender.wait(timeout=60)
    for name, proc in receivers.items():
        assert proc.exit_code == 0, proc.describe()
        assert file_sha256(outs[name]) == expected, name
    assert [version_of(receivers[n]) for n in ("h2tls", "h1tls", "h2c")] == ["2", "1.1", "2"]
    assert sender.exit_code == 0, sender.describe()
    assert sender.lines() == [
        "[INFO] Waiting for 3 receiver(s)...",
        "[INFO] 3 receiver(s) has/have been connected.",
        "[INFO] Start sending to 3 receiver(s)!",
        "[INFO] Sent successfully!",
        SUCCESS,
    ], sender.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_h2_sender_to_http11_and_h2c_receivers(server, procs, tmp_path, h2clients):
    size = 3 * MiB + 1
    data = os.urandom(size)
    out1, out2 = str(tmp_path / "r1"), str(tmp_path / "r2")
    r1 = procs.spawn(curl("-f", "--http1.1", "-o", out1, server.url("/up?n=2")), name="http/1.1")
    r2 = procs.spawn(curl("-f", H2C, "-o", out2, server.url("/up?n=2")), name="h2c")
    yield server.wait_receivers("/up", 2)
    client = yield h2clients.h2c(server.portnum)
    sender = client.put("/up?n=2", data)
    yield sender.wait(timeout=60)
    yield r1.wait()
    yield r2.wait()
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.describe() + r2.describe()
    assert file_sha256(out1) == file_sha256(out2) == helpers.sha256(data)
    assert (sender.status, sender.ended, sender.reset) == (200, True, None), sender.describe()
    assert sender.lines() == [
        "[INFO] Waiting for 2 receiver(s)...",
        "[INFO] 2 receiver(s) has/have been connected.",
        "[INFO] Start sending to 2 receiver(s)!",
        "[INFO] Sent successfully!",
        SUCCESS,
    ], sender.describe()
    client.close()
    yield server.wait_empty()


@pytest.mark.parametrize("first", ["receiver", "sender"])
@pytest_twisted.inlineCallbacks
def test_sender_and_receiver_on_one_h2c_connection(server, h2clients, first):
    size = 8 * MiB + 3
    data = os.urandom(size)
    client = yield h2clients.h2c(server.portnum)
    if first == "receiver":
        receiver = client.get("/one", keep=False)
        yield server.wait_receivers("/one", 1)
        sender = client.put("/one", data)
    else:
        sender = client.put("/one", data)
        yield server.wait_sender("/one")
        # The sender's progress streams on its stream before anyone comes.
        yield helpers.wait_for(lambda: sender.lines()[:1] == ["[INFO] Waiting for 1 receiver(s)..."],
                               what="the sender's first line")
        # Nothing is read past the stream's window while the pipe waits,
        # and the connection is still free for other streams.
        assert sender.sent <= 4 * MiB, sender.describe()
        version = client.get("/version")
        yield version.wait()
        assert version.status == 200, version.describe()
        receiver = client.get("/one", keep=False)
    yield receiver.wait(timeout=60)
    yield sender.wait(timeout=60)
    assert (receiver.status, receiver.ended, receiver.reset) == (200, True, None), receiver.describe()
    assert receiver.nbytes == size and receiver.sha256 == helpers.sha256(data)
    assert sender.lines() == (RECEIVER_FIRST if first == "receiver" else SENDER_FIRST), sender.describe()
    assert (sender.status, sender.ended, sender.reset) == (200, True, None), sender.describe()
    client.close()
    yield client.wait_closed()
    yield server.wait_empty()


@needs_alpn
@pytest_twisted.inlineCallbacks
def test_pipes_multiplexed_on_one_tls_connection(procs, services, tmp_path, h2clients):
    """Three pipes at once, all six streams on one TLS connection."""
    svc, server, tls_port, cert = yield tls_service(services, tmp_path)
    client = yield h2clients.h2tls(tls_port, cert)
    assert client.alpn == b"h2"
    bodies = {f"/m{i}": os.urandom(MiB * (i + 1) + i) for i in range(3)}
    receivers = {path: client.get(path, keep=False) for path in bodies}
    for path in bodies:
        yield server.wait_receivers(path, 1)
    senders = {path: client.request("POST", path, body=data) for path, data in bodies.items()}
    for path, data in bodies.items():
        yield receivers[path].wait(timeout=60)
        yield senders[path].wait(timeout=60)
        assert receivers[path].ended and receivers[path].sha256 == helpers.sha256(data), path
        assert senders[path].lines() == RECEIVER_FIRST, senders[path].describe()
    client.close()
    yield client.wait_closed()
    yield server.wait_empty()


@needs_alpn
@pytest_twisted.inlineCallbacks
def test_curl_parallel_multiplexes_a_receiver_and_its_sender_over_tls(procs, services, tmp_path):
    """``curl -Z``: a GET and a PUT of the same pipe on one TLS connection
    (curl 7.88 multiplexes an upload over TLS, not in the clear)."""
    svc, server, tls_port, cert = yield tls_service(services, tmp_path)
    url = f"https://127.0.0.1:{tls_port}/z"
    body = str(tmp_path / "body")
    expected = make_file(body, 3 * MiB + 9, seed=9)
    got, said = str(tmp_path / "got"), str(tmp_path / "said")
    proc = procs.spawn(curl("-f", "-v", "-Z", "--http2", "--cacert", cert, "-o", got, url,
                            "--next", "-f", "--http2", "--cacert", cert, "-T", body, "-o", said, url))
    yield proc.wait(timeout=60)
    assert proc.exit_code == 0, proc.describe()
    assert file_sha256(got) == expected
    assert lines_of(said) == RECEIVER_FIRST
    log = bytes(proc.err).decode("latin-1")
    assert log.count("* Connected to ") == 1, log
    assert "* Multiplexed connection found" in log, log
    yield server.wait_empty()


# ---------------------------------------------------------------- the h2 release


@pytest_twisted.inlineCallbacks
def test_one_mib_over_h2c_on_this_h2(server, procs, tmp_path):
    """Whatever h2 setup.cfg allows is installed (CI: the lowest and the
    newest), HTTP/2 moves bytes intact: by the fast path where it was
    verified (_h2.VERIFIED), by h2's own code elsewhere."""
    from pipeserver.http2 import _h2

    print(f"h2 {_h2.VERSION}: fast path {'on' if _h2.FAST else 'off'}, hooks {_h2.HOOKS}")
    assert _h2.HOOKS, _h2.PROBLEMS
    receiver, sender, expected, got, said = yield curl_transfer(
        procs, tmp_path, server.url("/mib"), 1 * MiB, [H2C], [H2C]
    )
    assert receiver.exit_code == 0 and sender.exit_code == 0, (receiver.describe(), sender.describe())
    assert version_of(receiver) == "2" and version_of(sender) == "2"
    assert file_sha256(got) == expected
    assert lines_of(said)[-1] == SUCCESS


#: twistd, with h2 claiming a release the fast path was not verified against.
UNVERIFIED_TWISTD = """
import sys
import h2
h2.__version__ = "4.0.99"
from twisted.scripts.twistd import run
sys.argv = ["twistd", "--nodaemon", "--pidfile=", "--logfile=-", "pipe",
            "--listen", "tcp:0:interface=127.0.0.1"]
run()
"""


@pytest_twisted.inlineCallbacks
def test_an_unverified_h2_runs_the_stock_path_and_says_so(procs, tmp_path):
    """Fail closed: on an h2 the fast path was not verified against, the
    server says so in one line and serves HTTP/2 with h2's own code."""
    import re
    import sys

    twistd = procs.spawn([sys.executable, "-c", UNVERIFIED_TWISTD], name="twistd (h2 4.0.99)")
    found = yield helpers.wait_for(
        lambda: re.search(rb"PipeSite starting on (\d+)", bytes(twistd.out)),
        timeout=20,
        what="twistd to listen",
    )
    url = f"http://127.0.0.1:{int(found.group(1))}/stock"
    receiver, sender, expected, got, said = yield curl_transfer(
        procs, tmp_path, url, 1 * MiB, [H2C], [H2C]
    )
    assert receiver.exit_code == 0 and sender.exit_code == 0, (receiver.describe(), sender.describe())
    assert version_of(receiver) == "2" and file_sha256(got) == expected
    assert lines_of(said)[-1] == SUCCESS
    out = bytes(twistd.out)
    assert out.count(b"is not a release the HTTP/2 DATA fast path was verified against") == 1, out
    assert b"Traceback" not in out, out
    twistd.kill()
    yield twistd.wait()
