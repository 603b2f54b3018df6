# mypy: disable-error-code="arg-type,var-annotated"
"""``--listen`` with ssl:, unix: and systemd: endpoints, end to end with curl.

ssl: and unix: run the service from ``tap.makeService`` in this process;
systemd: runs a real ``twistd`` that inherits a listening socket as fd 3,
the way systemd's socket activation hands it over.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

import helpers
from helpers import curl
from pipeserver.ops import tap

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
SUCCESS = "[INFO] All receiver(s) was/were received successfully."
#: curl: "Peer certificate cannot be authenticated with given CA certificates".
CURL_BAD_CERT = 60


@pytest.fixture
def services():
    running = []
    yield running
    for svc in running:
        if svc.running:
            pytest_twisted.blockon(defer.maybeDeferred(svc.stopService))


@pytest_twisted.inlineCallbacks
def run_service(services, *argv: str):
    """``makeService`` on the global reactor, started; returns it and its
    listening ports, in ``--listen`` order."""
    options = tap.Options()
    options.parseOptions(list(argv))
    svc = tap.makeService(options, reactor)
    services.append(svc)
    svc.startService()
    ports = []
    for child in svc:
        # tap.Listener wraps strports' service for each endpoint.
        waiting = getattr(getattr(child, "listener", child), "_waitingForPort", None)
        if waiting is None:
            continue
        got: defer.Deferred = defer.Deferred()

        def listening(port, got=got):
            got.callback(port)
            return port  # the service stops this port at stopService

        waiting.addCallback(listening)
        ports.append((yield helpers.with_timeout(got, 10, "the port to listen")))
    return svc, ports


def self_signed(directory: str):
    """A key and a self-signed certificate for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipeserver test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest_twisted.inlineCallbacks
def transfer(procs, tmp_path, size: int, url: str, *client: str):
    """Receiver first, then a chunked sender; both with the ``client`` options.
    Checks the bytes and the sender's last line."""
    body = tmp_path / "body"
    expected = helpers.make_file(str(body), size, seed=size)
    receiver = procs.spawn(curl("-f", *client, url), name="receiver")
    sender = procs.spawn(curl("-f", *client, "-T", "-", url), stdin=str(body), name="sender")
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    assert receiver.nbytes == size
    assert receiver.sha256 == expected
    assert sender.lines()[-1] == SUCCESS, sender.describe()


@pytest_twisted.inlineCallbacks
def test_ssl_endpoint(procs, services, tmp_path):
    key, cert = self_signed(str(tmp_path))
    svc, (port,) = yield run_service(
        services, "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    base = f"https://127.0.0.1:{port.getHost().port}"
    yield transfer(procs, tmp_path, 3 * 1024 * 1024 + 5, base + "/tls", "--cacert", cert)

    # The scheme the help page shows follows the connection.
    page = procs.spawn(curl("-f", "--cacert", cert, base + "/help"))
    yield page.wait()
    assert page.exit_code == 0, page.describe()
    assert f"\ncurl {base}/mypath\n" in page.text, page.text

    # It is really our certificate: without it curl refuses the server.
    untrusted = procs.spawn(curl("-f", base + "/version"))
    yield untrusted.wait()
    assert untrusted.exit_code == CURL_BAD_CERT, untrusted.describe()
    # And plain HTTP on that port gets no HTTP answer.
    plain = procs.spawn(curl("-f", f"http://127.0.0.1:{port.getHost().port}/version"))
    yield plain.wait()
    assert plain.exit_code != 0, plain.describe()
    assert svc.site.registry.pipes == {}


@pytest_twisted.inlineCallbacks
def test_unix_endpoint(procs, services, tmp_path):
    # Socket paths are limited to about 107 bytes: keep it short.
    directory = tempfile.mkdtemp(prefix="pipe-", dir="/tmp")
    try:
        sock = os.path.join(directory, "p.sock")
        svc, _ = yield run_service(services, "--listen", f"unix:{sock}:mode=600")
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        yield transfer(procs, tmp_path, 2 * 1024 * 1024 + 3, "http://pipe/unix",
                       "--unix-socket", sock)
        version = procs.spawn(curl("-f", "--unix-socket", sock, "http://pipe/version"))
        yield version.wait()
        assert version.exit_code == 0, version.describe()
        assert version.text.strip() == __import__("pipeserver").__version__
        yield svc.stopService()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.inlineCallbacks
def test_systemd_socket_activation(procs, tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    # systemd checks LISTEN_PID against the process it starts: the shell
    # sets its own pid and execs twistd, which keeps that pid.
    server = helpers.Proc("twistd")
    env = dict(procs._env, LISTEN_FDS="1", LISTEN_FDNAMES="pipe.socket")
    env.pop("LISTEN_PID", None)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        reactor.spawnProcess(
            server,
            "sh",
            ["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh",
             TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "pipe",
             "--listen", "systemd:domain=INET:index=0"],
            env=env,
            childFDs={0: devnull, 1: "r", 2: "r", 3: listener.fileno()},
        )
    finally:
        os.close(devnull)
        # The child holds the socket now; we never accept on it.
        listener.close()
    procs.all.append(server)

    # No need to wait for twistd: the kernel queues connections meanwhile,
    # which is the point of socket activation.
    yield transfer(procs, tmp_path, 1024 * 1024 + 7, base + "/activated")
    assert b"Traceback" not in bytes(server.out), server.describe()

    server.kill(signal.SIGTERM)
    yield server.wait()
    assert server.signal == signal.SIGTERM or server.exit_code == 0, server.describe()
    assert bytes(server.out).rstrip().endswith(b"Server Shut Down."), server.describe()
    # The socket went with the server: nobody listens on the port any more.
    refused = procs.spawn(curl("-f", base + "/version"))
    yield refused.wait()
    assert refused.exit_code == 7, refused.describe()
