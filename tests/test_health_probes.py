"""The probes that use ``/api/v1/pipe/health`` (issue 21, item 1): the
image's HEALTHCHECK (Containerfile) and the systemd units in tap/, each run
as written (paths and port put right) against a real server in this process.
tests/test_container.py runs the image's for real under podman."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys

import pytest
import pytest_twisted

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
BIN = os.path.dirname(sys.executable)


def unit_line(unit: str, key: str) -> str:
    with open(os.path.join(ROOT, "tap", unit)) as f:
        values = [line.split("=", 1)[1].strip() for line in f if line.startswith(key + "=")]
    assert len(values) == 1, (unit, key, values)
    return values[0]


def localised(command: str, port: int) -> str:
    """A unit's command with this checkout's venv and the test server's port."""
    return command.replace("/opt/pipeserver/.venv/bin", BIN).replace(":8080", f":{port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_systemctl(tmp_path):
    """An environment whose first ``systemctl`` on PATH only writes down
    what it was asked."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "systemctl.log"}\n')
    script.chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")


@pytest_twisted.inlineCallbacks
def test_service_waits_for_health_before_it_is_started(server, procs):
    command = localised(unit_line("pipe.service", "ExecStartPost"), server.portnum)
    assert command.split()[-2:] == ["healthcheck", f"http://127.0.0.1:{server.portnum}"]
    probe = procs.spawn(shlex.split(command))
    yield probe.wait()
    assert probe.exit_code == 0, probe.describe()
    assert probe.text == f"http://127.0.0.1:{server.portnum}/api/v1/pipe/health 200 ok\n"
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_health_timer_restarts_the_service_only_when_it_fails(server, procs, tmp_path):
    env = fake_systemctl(tmp_path)
    log = tmp_path / "systemctl.log"
    for port, restarted in ((server.portnum, False), (free_port(), True)):
        command = localised(unit_line("pipe-health.service", "ExecStart"), port)
        # The unit's own shell command, with our systemctl.
        probe = procs.spawn(["env", f"PATH={env['PATH']}", *shlex.split(command)])
        yield probe.wait()
        assert probe.exit_code == 0, probe.describe()
        assert log.exists() == restarted, probe.describe()
    assert log.read_text() == "restart pipe.service\n"
    assert unit_line("pipe-health.timer", "OnUnitActiveSec") == "30"


@pytest_twisted.inlineCallbacks
def test_a_draining_server_is_not_healthy(server, procs):
    yield server.registry.shutdown(0)
    command = localised(unit_line("pipe.service", "ExecStartPost"), server.portnum)
    probe = procs.spawn(shlex.split(command))
    yield probe.wait()
    assert probe.exit_code == 1, probe.describe()
    assert probe.text == f"http://127.0.0.1:{server.portnum}/api/v1/pipe/health 503 draining\n"


@pytest_twisted.inlineCallbacks
def test_image_healthcheck(server, procs):
    with open(os.path.join(ROOT, "Containerfile")) as f:
        text = f.read()
    cmd = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", text)
    assert cmd, "no HEALTHCHECK CMD in the Containerfile"
    argv = json.loads(cmd.group(1))
    assert argv == ["python3", "-m", "pipeserver.ops.environ", "healthcheck"]
    probe = procs.spawn(["env", f"PIPE_LISTEN=tcp:{server.portnum}", sys.executable, *argv[1:]])
    yield probe.wait()
    assert probe.exit_code == 0, probe.describe()
    assert probe.text == f"http://127.0.0.1:{server.portnum}/api/v1/pipe/health 200 ok\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path):
    for unit in ("pipe.socket", "pipe.service", "pipe-health.service", "pipe-health.timer"):
        with open(os.path.join(ROOT, "tap", unit)) as f:
            (tmp_path / unit).write_text(localised(f.read(), 8080))
    out = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
