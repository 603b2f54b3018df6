"""pipeserver behind real Caddy, configured as docs/proxies.md says.

The Caddy block is read from the guide, its timeouts scaled down as in the
nginx test. Debian 12's Caddy is 2.6, which does not know the guide's
``enable_full_duplex`` (2.7 and later); as the guide says, it is left out
there and its ``header_up X-Pipe-Progress at-end`` line is used instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

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

FULL_DUPLEX = "        enable_full_duplex"
AT_END = "        # header_up X-Pipe-Progress at-end"


def caddy_version(caddy: str) -> tuple:
    text = subprocess.run([caddy, "version"], capture_output=True, text=True).stdout
    found = re.match(r"v?(\d+)\.(\d+)", text.strip())
    assert found, text
    return int(found.group(1)), int(found.group(2))


def full_duplex(caddy: str) -> bool:
    return caddy_version(caddy) >= (2, 7)


def caddy_conf(caddy: str, directory: str, upstream: str, port: int) -> str:
    block = guide_block("caddy")
    for directive in ("pipe.example.com {", "reverse_proxy 127.0.0.1:8080 {",
                      "flush_interval -1", FULL_DUPLEX, AT_END, "read_timeout 360s",
                      "write_timeout 360s", "versions 1.1"):
        assert directive in block, f"the guide's Caddy block lost {directive!r}"
    block = block.replace("pipe.example.com {", f"http://127.0.0.1:{port} {{")
    block = block.replace("reverse_proxy 127.0.0.1:8080 {", f"reverse_proxy {upstream} {{")
    block = block.replace("360s", SCALED_TIMEOUT)
    if not full_duplex(caddy):  # the guide's way for Caddy 2.6
        block = "\n".join(line for line in block.splitlines() if FULL_DUPLEX not in line)
        block = block.replace(AT_END, AT_END.replace("# ", "", 1))
    # For the test only: no admin endpoint, files under the test's directory.
    return block.replace(
        "{\n", f"{{\n    admin off\n    storage file_system {directory}/data\n", 1
    )


#: Times a Caddy is started on a fresh port when another process took the
#: one picked for it (free_port can only pick: Caddy 2.6 binds it itself,
#: later, and takes no listening socket of ours).
PORT_TRIES = 5


@pytest_twisted.inlineCallbacks
def start_caddy(procs, tmp_path, server: helpers.Server):
    caddy = binary("caddy", "caddy", "the Caddy reverse-proxy tests")
    directory = str(tmp_path / "caddy")
    os.makedirs(directory, exist_ok=True)
    conf = os.path.join(directory, "Caddyfile")
    for attempt in range(PORT_TRIES):
        port = free_port()
        with open(conf, "w") as f:
            f.write(caddy_conf(caddy, directory, server.host, port))
        proc = procs.spawn(
            ["env", f"HOME={directory}", f"XDG_CONFIG_HOME={directory}",
             f"XDG_DATA_HOME={directory}", caddy, "run", "--config", conf,
             "--adapter", "caddyfile"],
            name="caddy",
        )

        def listening(proc=proc):
            # Caddy exits when its port is taken: say so, not "not listening".
            return proc.finished or b'"msg":"serving initial configuration"' in bytes(proc.err)

        yield helpers.wait_for(listening, timeout=10, what="Caddy to listen")
        if not proc.finished:
            return f"http://127.0.0.1:{port}", full_duplex(caddy)
        if b"address already in use" not in bytes(proc.err) or attempt == PORT_TRIES - 1:
            raise AssertionError(proc.describe())


@pytest_twisted.inlineCallbacks
def test_pairs_and_waits_through_caddy(make_server, procs, tmp_path):
    server = make_server("--wait-timeout", WAIT_TIMEOUT)
    base, duplex = yield start_caddy(procs, tmp_path, server)

    # Caddy passes Host through.
    yield help_sees_the_proxys_host(base)

    @pytest_twisted.inlineCallbacks
    def waiting(sender):
        if duplex:  # the sender's first line while its body is still unread
            yield helpers.wait_for(
                lambda: sender.lines() == SENDER_LINES[:1], what="the first line")
        else:  # Caddy passed the guide's X-Pipe-Progress on: lines at the end
            assert server.pipe("/sf").sender.request.getHeader(b"x-pipe-progress") == b"at-end"

    yield sender_first(server, procs, tmp_path, base, waiting)
    yield receiver_waits(server, procs, tmp_path, base, 4.0)


@pytest_twisted.inlineCallbacks
def test_64_mib_through_caddy_with_a_receiver_that_pauses(make_server, procs, tmp_path):
    # The case that stalls nginx without X-Pipe-Progress (see its test):
    # a receiver falling behind fills pipeserver's socket mid-upload.
    server = make_server("--wait-timeout", WAIT_TIMEOUT)
    base, _ = yield start_caddy(procs, tmp_path, server)
    size = 64 * 1024 * 1024
    body = tmp_path / "body"
    expected = helpers.make_file(str(body), size, seed=64)
    out = str(tmp_path / "out")
    receiver, sink = procs.pipeline(
        curl("-f", base + "/big"), ["sh", "-c", f"sleep 2; exec cat > {out}"]
    )
    yield server.wait_receivers("/big", 1)
    sender = procs.spawn(curl("-f", "-T", "-", base + "/big"), stdin=str(body))
    yield sender.wait(timeout=60)
    yield receiver.wait(timeout=60)
    yield sink.wait(timeout=60)
    assert sender.exit_code == 0, sender.describe()
    assert receiver.exit_code == 0, receiver.describe()
    assert helpers.file_sha256(out) == expected
    assert sender.lines()[-1] == SENDER_LINES[-1], sender.describe()


@pytest_twisted.inlineCallbacks
def test_a_port_taken_before_caddy_binds_it_is_picked_again(make_server, procs, tmp_path, monkeypatch):
    """The race (issue 17, item 7): free_port picks a port that another
    process takes before Caddy binds it. Caddy exits with "address already
    in use"; start_caddy picks another port and serves through that."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    picks = [taken.getsockname()[1]]
    monkeypatch.setattr(
        sys.modules[__name__], "free_port", lambda: picks.pop(0) if picks else free_port_now()
    )
    try:
        server = make_server("--wait-timeout", WAIT_TIMEOUT)
        base, _ = yield start_caddy(procs, tmp_path, server)
        assert not picks and base != f"http://127.0.0.1:{taken.getsockname()[1]}"
        yield help_sees_the_proxys_host(base)
    finally:
        taken.close()


free_port_now = free_port
