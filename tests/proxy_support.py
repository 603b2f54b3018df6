"""What the reverse-proxy tests share: docs/proxies.md's config blocks, the
programs they run (from Debian; each test skips loudly without its own),
the sender's lines through a proxy, and free ports."""

from __future__ import annotations

import os
import re
import shutil
import socket
import warnings

import pytest

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


def guide_block(language: str) -> str:
    """The one ```language block of docs/proxies.md."""
    with open(GUIDE, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    assert len(blocks) == 1, f"docs/proxies.md should hold one {language} block"
    return blocks[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
