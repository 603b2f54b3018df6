"""The real ``twistd pipe`` process: SIGHUP reloads tokens, SIGTERM drains."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import sys

import pytest
import pytest_twisted
from twisted.internet import task

import helpers
from helpers import curl
from pipeserver.ops import tap

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
TOKEN_A = "alpha-token-for-the-service-test"
TOKEN_G = "gamma-token-for-the-service-test"
SHUTTING_DOWN = b"[ERROR] The server is shutting down.\n"
#: curl's exit codes for a receiver cut short: closed before the end (18), or
#: reset (56, "Recv failure"), which is how a shutdown cuts a transfer.
CUT_SHORT = (helpers.CURL_PARTIAL_FILE, 56)


def line(project: str, token: str) -> str:
    return f"{project} {hashlib.sha256(token.encode()).hexdigest()}\n"


@pytest_twisted.inlineCallbacks
def start_twistd(procs, tmp_path, *options: str):
    proc = procs.spawn(
        [TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "pipe",
         "--listen", "tcp:0:interface=127.0.0.1", *options],
        name="twistd",
    )
    found = yield helpers.wait_for(
        lambda: re.search(rb"PipeSite starting on (\d+)", bytes(proc.out)),
        timeout=20,
        what="twistd to listen",
    )
    return proc, f"http://127.0.0.1:{int(found.group(1))}"


@pytest_twisted.inlineCallbacks
def stopped(server):
    """twistd ends by re-raising SIGTERM once it has shut down cleanly."""
    yield server.wait()
    assert server.signal == signal.SIGTERM or server.exit_code == 0, server.describe()
    assert bytes(server.out).rstrip().endswith(b"Server Shut Down."), server.describe()
    assert b"Traceback" not in bytes(server.out), server.describe()


def auth(token: str) -> list[str]:
    return ["-H", f"Authorization: Bearer {token}"]


@pytest_twisted.inlineCallbacks
def head_status(procs, url: str, token: str):
    proc = procs.spawn(curl("-o", "/dev/null", "-w", "%{http_code}", "-I", *auth(token), url))
    yield proc.wait()
    return proc.text


@pytest_twisted.inlineCallbacks
def test_sighup_reloads_tokens_and_leaves_a_transfer_in_flight_alone(procs, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(line("alpha", TOKEN_A))
    stamp = os.stat(tokens)
    server, base = yield start_twistd(procs, tmp_path, "--tokens", str(tokens))

    first, rest = tmp_path / "first", tmp_path / "rest"
    helpers.make_file(str(first), 256 * 1024, seed=1)
    helpers.make_file(str(rest), 256 * 1024, seed=2)
    expected = hashlib.sha256(first.read_bytes() + rest.read_bytes()).hexdigest()
    gate = str(tmp_path / "gate")
    receiver = procs.spawn(curl("-f", *auth(TOKEN_A), base + "/hup"))
    sender_gen, sender = procs.pipeline(
        helpers.gated(str(first), gate, str(rest)),
        curl("-f", *auth(TOKEN_A), "-T", "-", base + "/hup"),
    )
    yield helpers.has_received(receiver, 256 * 1024)

    # Same size, same inode, same mtime: only SIGHUP can make the server see it.
    tokens.write_text(line("gamma", TOKEN_G))
    os.utime(tokens, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert (yield head_status(procs, base + "/probe", TOKEN_A)) == "200"
    os.kill(server.pid, signal.SIGHUP)
    yield helpers.wait_for(
        lambda: b"Tokens file " in bytes(server.out) and b"loaded: 1 token(s)" in bytes(server.out),
        what="the reload to be logged",
    )
    assert (yield head_status(procs, base + "/probe", TOKEN_G)) == "200"
    assert (yield head_status(procs, base + "/probe", TOKEN_A)) == "401"

    helpers.open_gate(gate)
    yield sender.wait()
    yield receiver.wait()
    assert sender.exit_code == 0, sender.describe()
    assert receiver.exit_code == 0, receiver.describe()
    assert receiver.sha256 == expected
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert TOKEN_A.encode() not in server.out and TOKEN_G.encode() not in server.out

    server.kill(signal.SIGTERM)
    yield stopped(server)


@pytest_twisted.inlineCallbacks
def test_sigterm_releases_waiters_and_lets_a_transfer_finish(procs, tmp_path):
    server, base = yield start_twistd(procs, tmp_path, "--shutdown-grace", "20")
    first, rest = tmp_path / "first", tmp_path / "rest"
    helpers.make_file(str(first), 300_000, seed=5)
    helpers.make_file(str(rest), 300_000, seed=6)
    expected = hashlib.sha256(first.read_bytes() + rest.read_bytes()).hexdigest()
    gate = str(tmp_path / "gate")

    waiting = procs.spawn(curl("-D", "-", base + "/lonely"))
    receiver = procs.spawn(curl("-f", base + "/busy"))
    _, sender = procs.pipeline(
        helpers.gated(str(first), gate, str(rest)), curl("-f", "-T", "-", base + "/busy")
    )
    yield helpers.has_received(receiver, 300_000)
    # The lonely receiver is parked by now too: it connected before the pair.
    server.kill(signal.SIGTERM)

    yield waiting.wait()
    status, headers, body = helpers.split_response(bytes(waiting.out))
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert helpers.header_values(headers, "Retry-After") == ["5"]
    assert body == SHUTTING_DOWN

    yield helpers.wait_for(lambda: b"Port" in bytes(server.out) and b"Closed" in bytes(server.out),
                           what="the listener to close")
    refused = procs.spawn(curl("-f", base + "/late"))
    yield refused.wait()
    assert refused.exit_code == 7, refused.describe()  # could not connect

    helpers.open_gate(gate)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert receiver.sha256 == expected
    assert sender.exit_code == 0, sender.describe()
    yield stopped(server)


@pytest_twisted.inlineCallbacks
def test_sigterm_cuts_transfers_still_running_after_the_grace(procs, tmp_path):
    server, base = yield start_twistd(procs, tmp_path, "--shutdown-grace", "1")
    first = tmp_path / "first"
    helpers.make_file(str(first), 100_000, seed=7)
    gate = str(tmp_path / "gate")
    receiver = procs.spawn(curl("-f", base + "/stuck"))
    _, sender = procs.pipeline(helpers.gated(str(first), gate), curl("-T", "-", base + "/stuck"))
    yield helpers.has_received(receiver, 100_000)
    server.kill(signal.SIGTERM)
    yield receiver.wait()
    assert receiver.exit_code in CUT_SHORT, receiver.describe()
    # curl notices the closed connection only when it next sends: let its
    # input end, so it sends the last chunk.
    helpers.open_gate(gate)
    yield sender.wait()
    assert sender.exit_code != 0, sender.describe()
    assert b"[INFO] Sent successfully!" not in bytes(sender.out), sender.describe()
    yield stopped(server)


@pytest_twisted.inlineCallbacks
def test_log_format_json_writes_one_json_object_per_line(procs, tmp_path):
    server, base = yield start_twistd(procs, tmp_path, "--log-format", "json")
    body = tmp_path / "body"
    expected = helpers.make_file(str(body), 123_457, seed=9)
    sender = procs.spawn(curl("-f", "--data-binary", f"@{body}", base + "/json?n=1"))
    receiver = procs.spawn(curl("-f", base + "/json"))
    yield sender.wait()
    yield receiver.wait()
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    server.kill(signal.SIGTERM)
    yield server.wait()
    assert server.signal == signal.SIGTERM or server.exit_code == 0, server.describe()

    events = [json.loads(text) for text in bytes(server.out).decode().splitlines()]
    assert all(isinstance(event, dict) and "text" in event and "time" in event
               for event in events)
    access = [e for e in events if e["namespace"] == "pipeserver.access"]
    by_method = {e["method"]: e for e in access}
    assert sorted(by_method) == ["GET", "POST"], access
    post, get = by_method["POST"], by_method["GET"]
    assert (post["path"], post["status"], post["result"], post["received"], post["project"]) == (
        "/json", 200, "ok", 123_457, "-")
    assert (get["path"], get["status"], get["sent"]) == ("/json", 200, 123_457)
    assert get["text"].startswith("GET /json 200 ok in=0 out=123457 ")
    assert post["level"] == "info"
    assert events[-1]["text"] == "Server Shut Down."


@pytest_twisted.inlineCallbacks
def test_text_log_file_rotates_on_sigusr1(procs, tmp_path):
    # The default text log goes through pipeserver's observer: it keeps
    # twistd's file handling, SIGUSR1 rotation included.
    logfile = tmp_path / "pipe.log"
    server = procs.spawn(
        [TWISTD, "--nodaemon", "--pidfile=", f"--logfile={logfile}", "pipe",
         "--listen", "tcp:0:interface=127.0.0.1"],
        name="twistd",
    )

    def text(path) -> str:
        return path.read_text() if path.exists() else ""

    found = yield helpers.wait_for(
        lambda: re.search(r"PipeSite starting on (\d+)", text(logfile)),
        timeout=20, what="twistd to listen")
    base = f"http://127.0.0.1:{int(found.group(1))}"
    first = procs.spawn(curl("-f", "-o", "/dev/null", base + "/version"))
    yield first.wait()
    yield helpers.wait_for(lambda: "GET /version 200" in text(logfile), what="an access line")
    server.kill(signal.SIGUSR1)
    rotated = tmp_path / "pipe.log.1"
    yield helpers.wait_for(rotated.exists, what="the log to rotate")
    second = procs.spawn(curl("-f", "-o", "/dev/null", base + "/help"))
    yield second.wait()
    yield helpers.wait_for(lambda: "GET /help 200" in text(logfile), what="an access line")
    server.kill(signal.SIGTERM)
    yield stopped_quietly(server)
    old, new = rotated.read_text(), text(logfile)
    assert "GET /version 200" in old and "GET /help" not in old
    assert "GET /help 200" in new and "GET /version" not in new
    line = next(line for line in new.splitlines() if "GET /help 200" in line)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[pipeserver\.access#info\] "
        r"GET /help 200 ok in=0 out=\d+ \d+\.\d{3}s project=-", line), line
    assert new.rstrip().endswith("Server Shut Down.")


@pytest_twisted.inlineCallbacks
def stopped_quietly(server):
    yield server.wait()
    assert server.signal == signal.SIGTERM or server.exit_code == 0, server.describe()


@pytest_twisted.inlineCallbacks
def test_sigterm_after_a_clean_drain_exits_0(procs, tmp_path):
    server, base = yield start_twistd(procs, tmp_path, "--shutdown-grace", "20")
    first, rest = tmp_path / "first", tmp_path / "rest"
    helpers.make_file(str(first), 300_000, seed=15)
    helpers.make_file(str(rest), 300_000, seed=16)
    expected = hashlib.sha256(first.read_bytes() + rest.read_bytes()).hexdigest()
    gate = str(tmp_path / "gate")
    receiver = procs.spawn(curl("-f", base + "/clean"))
    _, sender = procs.pipeline(
        helpers.gated(str(first), gate, str(rest)), curl("-f", "-T", "-", base + "/clean")
    )
    yield helpers.has_received(receiver, 300_000)
    server.kill(signal.SIGTERM)
    yield helpers.wait_for(lambda: b"Shutting down: 1 pipe(s) open" in bytes(server.out),
                           what="the drain to start")
    helpers.open_gate(gate)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    yield server.wait()
    # Every transfer ended within the grace: a clean exit, not "killed by SIGTERM".
    assert (server.exit_code, server.signal) == (0, None), server.describe()
    assert bytes(server.out).rstrip().endswith(b"Server Shut Down."), server.describe()
    assert b"Traceback" not in bytes(server.out), server.describe()


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (TCP_INFO), read without reading data."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]


TCP_ESTABLISHED, TCP_CLOSE = 1, 7


@pytest_twisted.inlineCallbacks
def test_sigterm_cuts_receivers_at_once_when_the_grace_ends(procs, tmp_path):
    grace = 2.0
    server, base = yield start_twistd(procs, tmp_path, "--shutdown-grace", str(grace))
    port = int(base.rsplit(":", 1)[1])
    data = tmp_path / "data"
    helpers.make_file(str(data), 16 * 1024 * 1024, seed=17)
    # A receiver that reads nothing holds the transfer past the grace, with
    # bytes buffered for it in the server when the grace ends.
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", port))
    stuck.sendall(b"GET /late?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        fast = procs.spawn(curl("-f", "-o", "/dev/null", base + "/late?n=2"))
        sender = procs.spawn(curl("-T", str(data), base + "/late?n=2"))
        yield helpers.wait_for(lambda: b"Start sending" in bytes(sender.out),
                               what="the transfer to start")
        assert tcp_state(stuck) == TCP_ESTABLISHED
        server.kill(signal.SIGTERM)
        yield helpers.wait_for(lambda: tcp_state(stuck) != TCP_ESTABLISHED, timeout=30,
                               what="the stuck receiver to be cut")
        # Reset (not a FIN it would have to read up to). When, on the
        # server's clock: test_shutdown_cuts_receivers_when_the_grace_ends.
        assert tcp_state(stuck) == TCP_CLOSE
        yield fast.wait()
        assert fast.exit_code in CUT_SHORT, fast.describe()
        yield sender.wait()
        assert sender.exit_code != 0, sender.describe()
        assert b"[INFO] Sent successfully!" not in bytes(sender.out), sender.describe()
    finally:
        stuck.close()
    yield server.wait()
    # A transfer was cut: the exit says SIGTERM, as before.
    assert server.signal == signal.SIGTERM, server.describe()
    assert bytes(server.out).rstrip().endswith(b"Server Shut Down."), server.describe()


@pytest_twisted.inlineCallbacks
def test_shutdown_cuts_receivers_when_the_grace_ends(make_server, procs, tmp_path):
    """The drain of PipeService.stopService, in this process, its grace on
    a Clock: a receiver that reads nothing is reset when the grace ends,
    not before, and the drain then completes."""
    from twisted.internet import reactor

    grace = 2.0
    server = make_server()
    clock = task.Clock()
    server.registry.clock = clock
    data = tmp_path / "data"
    helpers.make_file(str(data), 16 * 1024 * 1024, seed=17)
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.portnum))
    stuck.sendall(b"GET /late?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        fast = procs.spawn(curl("-f", "-o", "/dev/null", server.url("/late?n=2")))
        sender = procs.spawn(curl("-T", str(data), server.url("/late?n=2")))
        yield helpers.wait_for(lambda: b"Start sending" in bytes(sender.out),
                               what="the transfer to start")
        drained = tap.PipeService(server.wiring, grace).stopService()
        clock.advance(grace - 0.001)
        assert server.registry.cutAtShutdown == 0
        assert server.pipe("/late").state.name == "STREAMING"
        assert tcp_state(stuck) == TCP_ESTABLISHED
        clock.advance(0.001)
        assert server.registry.cutAtShutdown == 1
        yield helpers.wait_for(lambda: tcp_state(stuck) != TCP_ESTABLISHED, timeout=30,
                               what="the stuck receiver to be cut")
        assert tcp_state(stuck) == TCP_CLOSE  # a reset, not a FIN
        yield fast.wait()
        assert fast.exit_code in CUT_SHORT, fast.describe()
        yield sender.wait()
        assert sender.exit_code != 0, sender.describe()
        assert b"[INFO] Sent successfully!" not in bytes(sender.out), sender.describe()
        yield helpers.with_timeout(drained, 30, "the drain")
    finally:
        stuck.close()
    assert server.registry.pipes == {}


@pytest_twisted.inlineCallbacks
def test_twistd_raises_the_soft_fd_limit_and_logs_its_capacity(procs, tmp_path):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"SKIPPED LOUDLY: needs a finite hard RLIMIT_NOFILE above 1024, got {hard}")
    # Started with the soft limit low, as many systems do.
    server = procs.spawn(
        ["sh", "-c", 'ulimit -Sn 1024 && exec "$0" "$@"', TWISTD, "--nodaemon", "--pidfile=",
         "--logfile=-", "pipe", "--listen", "tcp:0:interface=127.0.0.1"],
        name="twistd",
    )
    yield helpers.wait_for(lambda: b"PipeSite starting on" in bytes(server.out), timeout=20,
                           what="twistd to listen")
    fds = hard - 100
    waiting = fds // 2
    line = (f"Capacity: {fds:,} file descriptors; up to {waiting:,} waiting parties, "
            f"{waiting // 16:,} per client; {waiting // 16 * 2:,} connections per client")
    yield helpers.wait_for(lambda: line.encode() in bytes(server.out), timeout=10,
                           what=f"the line {line!r}")
    with open(f"/proc/{server.pid}/limits") as limits:
        row = next(text for text in limits if text.startswith("Max open files"))
    assert row.split()[3:5] == [str(hard), str(hard)], row
    server.kill(signal.SIGTERM)
    yield server.wait()
    # Nothing was under way: a clean exit.
    assert (server.exit_code, server.signal) == (0, None), server.describe()


@pytest_twisted.inlineCallbacks
def test_a_port_in_use_and_a_bad_endpoint_are_one_line_each(procs, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        busy = procs.spawn([TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "pipe",
                            "--listen", f"tcp:{port}:interface=127.0.0.1"], name="busy")
        bad = procs.spawn([TWISTD, "--nodaemon", "--pidfile=", "pipe", "--listen", "tcp:notaport"],
                          name="bad")
        yield busy.wait()
        yield bad.wait()
    finally:
        taken.close()
    assert busy.exit_code == 1, busy.describe()
    assert b"Traceback" not in bytes(busy.out) + bytes(busy.err), busy.describe()
    (line,) = [text for text in busy.lines() if "cannot listen" in text]
    assert line.endswith(
        f"[stderr#error] twistd pipe: cannot listen on tcp:{port}:interface=127.0.0.1 (--listen): "
        "address already in use. Is another server using it? Stop it, or serve elsewhere, "
        "e.g. --listen tcp:8081:interface=127.0.0.1 (make serve LISTEN=...)"
    ), line
    assert bad.exit_code == 1, bad.describe()
    assert bytes(bad.out) == b""
    assert bytes(bad.err).decode() == (
        "twistd pipe: --listen tcp:notaport: not an endpoint we can use (ValueError: invalid "
        "literal for int() with base 10: 'notaport'). Examples: tcp:8080, "
        "tcp:8080:interface=127.0.0.1, unix:/run/pipe.sock, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem\n"
    )


CHECKOUT = os.path.join(os.path.dirname(__file__), os.pardir)


@pytest_twisted.inlineCallbacks
def test_make_serve_in_a_fresh_checkout_serves_without_test_extras_or_banners(procs, tmp_path):
    """The README's first command, as a new user runs it: a copy of the
    checkout with no venv, ``make serve`` on another port (the README's
    way). It installs the server alone, prints no setuptools banner, and
    serves."""
    import shutil

    copy = tmp_path / "pipeserver"
    shutil.copytree(CHECKOUT, copy, ignore=shutil.ignore_patterns(
        ".venv*", ".git", ".nox", "build", "__pycache__", "*.egg-info", ".mypy_cache",
        "dropin.cache", ".hypothesis", "bench"))
    make = procs.spawn(["setsid", "make", "-C", str(copy), "serve",
                        "LISTEN=tcp:0:interface=127.0.0.1"], name="make serve")
    try:
        found = yield helpers.wait_for(
            lambda: re.search(rb"PipeSite starting on (\d+)", bytes(make.out)),
            timeout=600, interval=0.5, what="make serve to listen")
        reply = yield helpers.http("GET", f"http://127.0.0.1:{int(found.group(1))}/version")
        assert reply.code == 200
    finally:
        try:
            os.killpg(make.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        yield make.wait(timeout=60)
    output = bytes(make.out) + bytes(make.err)
    for banner in (b"editable mode", b"transitional", b"Traceback"):
        assert banner not in output, make.describe()
    assert b"Settings: listen=tcp:0:interface=127.0.0.1 " in output
    site = [p for p in (copy / ".venv" / "lib").glob("python3*/site-packages")]
    assert site, list((copy / ".venv").iterdir())
    installed = {p.name.split("-")[0].lower() for p in site[0].glob("*.dist-info")}
    assert {"pipeserver", "twisted", "h2", "prometheus_client"} <= installed, installed
    assert not {"pytest", "playwright", "hypothesis", "treq"} & installed, installed
