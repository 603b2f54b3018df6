"""What the reverse-proxy tests share: docs/proxies.md's config blocks, the
programs they run (from Debian; each test skips loudly without its own),
the sender's lines through a proxy, free ports, and the scenarios every
proxy must pass."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import warnings
from typing import Any, Callable, Optional

import pytest
import pytest_twisted

import helpers
from helpers import curl

#: The servers wait 6 s (``--wait-timeout``); the guide's 360 s proxy
#: timeouts are scaled as its 300 s wait is to 6 s.
WAIT_TIMEOUT = "6"
SCALED_TIMEOUT = "9s"
GUIDE = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "proxies.md")
SENDER_LINES = [
    "[INFO] Waiting for 1 receiver(s)...",
    "[INFO] A receiver was connected.",
    "[INFO] Start sending to 1 receiver(s)!",
    "[INFO] Sent successfully!",
    "[INFO] All receiver(s) was/were received successfully.",
]


def binary(name: str, package: str, what: str) -> str:
    """The program ``name``, or a loud skip naming its Debian package."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        message = (
            f"{name.upper()} IS NOT INSTALLED: {what} did not run "
            f"(apt-get install {package}; .ci/run does)"
        )
        warnings.warn(message)
        pytest.skip(message)
    return found


def guide_block(language: str, holding: str = "") -> str:
    """The one ```language block of docs/proxies.md (the one ``holding``
    that text, where there are several)."""
    with open(GUIDE, encoding="utf-8") as f:
        text = f.read()
    blocks = [block for block in re.findall(rf"```{language}\n(.*?)```", text, re.S)
              if holding in block]
    assert len(blocks) == 1, f"docs/proxies.md should hold one {language} block {holding!r}"
    return blocks[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.inlineCallbacks
def help_sees_the_proxys_host(base: str):
    """/help builds its recipes from the Host the proxy passed on."""
    page = yield helpers.http("GET", base + "/help")
    assert page.code == 200
    assert f"\ncurl {base}/mypath\n" in page.body.decode(), page.body


@pytest_twisted.inlineCallbacks
def sender_first(
    server: Any, procs: Any, tmp_path: Any, base: str,
    waiting: Optional[Callable[[Any], Any]] = None,
):
    """A sender whose body stops after 300 kB until its receiver has them:
    the proxy must pass a body on before it has all of it. ``waiting(sender)``
    runs once the server sees the sender; returns the receiver's headers."""
    first, rest = tmp_path / "first", tmp_path / "rest"
    helpers.make_file(str(first), 300_000, seed=1)
    helpers.make_file(str(rest), 200_000, seed=2)
    expected = hashlib.sha256(first.read_bytes() + rest.read_bytes()).hexdigest()
    gate = str(tmp_path / "gate")
    _, sender = procs.pipeline(
        helpers.gated(str(first), gate, str(rest)),
        curl("-f", "-H", "Content-Type: application/x-test", "-T", "-", base + "/sf"),
    )
    yield server.wait_sender("/sf")
    if waiting is not None:
        yield waiting(sender)
    receiver = procs.spawn(curl("-f", "-D", str(tmp_path / "headers"), base + "/sf"))
    yield helpers.has_received(receiver, 300_000)
    helpers.open_gate(gate)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    assert receiver.sha256 == expected
    assert sender.lines() == SENDER_LINES, sender.describe()
    headers = (tmp_path / "headers").read_bytes().decode("latin-1")
    assert "\r\nContent-Type: application/x-test\r\n" in headers
    return headers


@pytest_twisted.inlineCallbacks
def receiver_waits(server: Any, procs: Any, tmp_path: Any, base: str, seconds: float = 4.0):
    """A receiver waits ``seconds`` in silence, then gets a counted body."""
    body = tmp_path / "body"
    expected = helpers.make_file(str(body), 1_000_003, seed=3)
    receiver = procs.spawn(curl("-f", base + "/rf"), name="waiting receiver")
    yield server.wait_receivers("/rf", 1)
    yield helpers.sleep(seconds)
    assert not receiver.finished, receiver.describe()
    sender = procs.spawn(curl("-f", "--data-binary", f"@{body}", base + "/rf"))
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert receiver.sha256 == expected
    assert sender.lines() == [SENDER_LINES[0], "[INFO] 1 receiver(s) has/have been connected.",
                              *SENDER_LINES[2:]], sender.describe()
