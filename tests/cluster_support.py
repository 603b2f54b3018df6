# mypy: disable-error-code="import-not-found,override,union-attr"
"""Support for tests/test_cluster.py: a cluster (deploy/cluster.py: N real
``twistd pipe`` processes behind HAProxy on loopback) and a small raw HTTP/1.1
client on the reactor, cheap enough to run a thousand parties at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "deploy"))
import cluster as cluster_script  # noqa: E402

CLUSTER = os.path.join(ROOT, "deploy", "cluster.py")
HAPROXY = cluster_script.find_haproxy("haproxy")
#: Fast health checks, so that a dead instance is marked down in about 0.4 s.
FAST_CHECKS = "inter 200ms fall 2 rise 1"
INSTANCE = re.compile(r"^\[cluster\] (pipe\d+) pid=(\d+) listening on [\d.]+:(\d+)$", re.M)
READY = re.compile(r"^\[cluster\] ready: http://[\d.]+:(\d+)/", re.M)


# ---------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    proc: helpers.Proc
    port: int
    #: name -> (pid, port)
    instances: Dict[str, Tuple[int, int]]

    def access(self, name: str) -> List[str]:
        """The access lines (``METHOD PATH STATUS ...``) of one instance."""
        marker = "[pipeserver.access#info] "
        prefix = f"[{name}] "
        return [
            line.split(marker, 1)[1]
            for line in self.proc.lines()
            if line.startswith(prefix) and marker in line
        ]

    def served(self) -> Dict[str, List[Tuple[str, str]]]:
        """name -> [(method, path)] of every pipe request it logged."""
        out: Dict[str, List[Tuple[str, str]]] = {}
        for name in self.instances:
            out[name] = [
                tuple(line.split(" ", 2)[:2])  # type: ignore[misc]
                for line in self.access(name)
                if not line.startswith(("GET /version ", "OPTIONS "))
            ]
        return out

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.kill(self.instances[name][0], sig)


@pytest_twisted.inlineCallbacks
def start_cluster(procs: helpers.Procs, n: int = 3, *pipe_options: str):
    port = cluster_script.free_port()
    proc = procs.spawn(
        [sys.executable, CLUSTER, "-n", str(n), "--port", str(port), "--base-port", "0",
         "--check", FAST_CHECKS, "--instance-header", "--stop-after", "15",
         "--", "--shutdown-grace", "5", *pipe_options],
        name="cluster",
    )
    yield helpers.wait_for(
        lambda: READY.search(proc.text) or proc.finished,
        timeout=40,
        what="the cluster to be ready",
    )
    assert READY.search(proc.text), proc.describe()
    instances = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in INSTANCE.finditer(proc.text)}
    assert len(instances) == n, proc.text
    return Cluster(proc, port, instances)


@pytest_twisted.inlineCallbacks
def stop_cluster(cluster: Cluster, sig: int = signal.SIGTERM):
    """Stop it as Ctrl-C does; everything must be gone afterwards."""
    cluster.proc.kill(sig)
    yield cluster.proc.wait(timeout=30)
    for name, (pid, _) in cluster.instances.items():
        yield helpers.wait_for(lambda: not _alive(pid), timeout=5, what=f"{name} to exit")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# ---------------------------------------------------------------- raw HTTP


@dataclass
class Reply:
    status: int
    headers: Dict[str, List[str]]
    body: bytes
    #: The body ended as its framing says (last chunk, or Content-Length met).
    complete: bool
    raw: bytes = field(repr=False, default=b"")

    def one(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def lines(self) -> List[str]:
        return self.body.decode("utf-8", "replace").splitlines()


def parse(raw: bytes) -> Reply:
    """One response (after any 1xx), as read until the server closed."""
    data = raw
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"no complete response head in {raw[:300]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        if 100 <= status < 200:
            data = rest
            continue
        break
    headers: Dict[str, List[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        body, complete = _dechunk(rest)
    elif "content-length" in headers:
        length = int(headers["content-length"][0])
        body, complete = rest[:length], len(rest) >= length
    else:
        body, complete = rest, True
    return Reply(status, headers, body, complete, raw)


def _dechunk(data: bytes) -> Tuple[bytes, bool]:
    out = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return bytes(out), False
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out), True
        start = end + 2
        if len(data) < start + size + 2:
            out += data[start:]
            return bytes(out), False
        out += data[start : start + size]
        pos = start + size + 2


def chunked(body: bytes, parts: int = 3) -> bytes:
    """``body`` in chunked encoding, split into about ``parts`` chunks."""
    out = bytearray()
    step = max(1, -(-len(body) // parts))
    for i in range(0, len(body), step):
        piece = body[i : i + step]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


class Conn(Protocol):
    """A client connection: what it received, and ``closed`` firing with it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(bytes(self.received))

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def abort(self) -> None:
        self.transport.abortConnection()


def head(method: str, path: str, headers: Optional[Dict[str, str]] = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: pipe.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@defer.inlineCallbacks
def connect(port: int, first: bytes = b""):
    conn = yield helpers.with_timeout(
        connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), Conn()),
        10,
        "a connection",
    )
    if first:
        conn.write(first)
    return conn


@defer.inlineCallbacks
def finish(conn: Conn, timeout: float = 30.0, what: str = "a response"):
    """The reply once the server closes; the connection is cut at ``timeout``."""
    timer = reactor.callLater(timeout, conn.abort)
    try:
        raw = yield conn.closed
    finally:
        if timer.active():
            timer.cancel()
    try:
        return parse(raw)
    except ValueError:  # closed (or cut at the timeout) before a response head
        return Reply(0, {}, b"", False, raw)


@defer.inlineCallbacks
def request(port: int, method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[Dict[str, str]] = None, mode: str = "length",
            timeout: float = 30.0):
    """One request on a fresh connection, the body sent at once."""
    hdrs = dict(headers or {})
    payload = b""
    if body is not None:
        if mode == "chunked":
            hdrs["Transfer-Encoding"] = "chunked"
            payload = chunked(body)
        else:
            hdrs["Content-Length"] = str(len(body))
            payload = body
    conn = yield connect(port, head(method, path, hdrs) + payload)
    reply = yield finish(conn, timeout, f"{method} {path}")
    return reply


def sender_ok(reply: Reply) -> bool:
    return (
        reply.status == 200
        and reply.complete
        and reply.lines()[-1:] == ["[INFO] All receiver(s) was/were received successfully."]
    )
