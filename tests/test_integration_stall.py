"""Stalled receivers over real sockets (SPEC §5): one receiver of a fan-out
pipe that stops reading is cut after ``--stall-timeout``, the others get
every byte; a slow receiver that keeps reading is never cut.

The stalled and the slow receivers are raw sockets with a small receive
buffer (so the kernel cannot soak up the body for them); the others are curl.
"""

from __future__ import annotations

import hashlib
import socket

import pytest_twisted
from twisted.internet import reactor, task

import helpers
from helpers import curl

BODY = 12 * 1024 * 1024


def raw_receiver(port: int, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A GET on a socket whose receive buffer is small (set before connect,
    so the window stays small); nobody reads it unless told to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> tuple[bytes, bool]:
    """What the socket holds now, and whether the peer has gone (EOF or reset)."""
    got = bytearray()
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return bytes(got), False
        except ConnectionResetError:
            return bytes(got), True
        if not data:
            return bytes(got), True
        got += data


@pytest_twisted.inlineCallbacks
def test_a_stalled_receiver_is_cut_and_the_others_complete(make_server, procs, tmp_path):
    server = make_server("--stall-timeout", "1")
    data = tmp_path / "data"
    digest = helpers.make_file(str(data), BODY, seed=11)
    stalled = raw_receiver(server.portnum, "/fan?n=3")
    try:
        out1, out2 = tmp_path / "r1", tmp_path / "r2"
        r1 = procs.spawn(curl("-f", "-o", str(out1), server.url("/fan?n=3")))
        r2 = procs.spawn(curl("-f", "-o", str(out2), server.url("/fan?n=3")))
        yield server.wait_receivers("/fan", 3)
        sender = procs.spawn(curl("-f", "-T", str(data), server.url("/fan?n=3")))
        for proc in (r1, r2, sender):
            yield helpers.with_timeout(proc.wait(), 30, proc.name)
            assert proc.exit_code == 0, proc.describe()
        assert helpers.file_sha256(str(out1)) == digest
        assert helpers.file_sha256(str(out2)) == digest
        assert sender.lines() == [
            "[INFO] Waiting for 3 receiver(s)...",
            "[INFO] 3 receiver(s) has/have been connected.",
            "[INFO] Start sending to 3 receiver(s)!",
            "[INFO] A receiver was cut: it took no bytes for 1 seconds.",
            "[INFO] Sent successfully!",
            "[INFO] 2 of 3 receiver(s) received successfully.",
        ]
        # The stalled one sees a truncated stream: short of its length, then reset.
        got = bytearray()
        gone = False
        while not gone:
            more, gone = drain(stalled)
            got += more
            if not gone:
                yield helpers.sleep(0.01)
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: %d\r\n" % BODY in head
        assert len(body) < BODY
    finally:
        stalled.close()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_a_slow_receiver_that_keeps_reading_is_never_cut(make_server, procs, tmp_path):
    server = make_server("--stall-timeout", "1")
    data = tmp_path / "data"
    size = 8 * 1024 * 1024
    digest = helpers.make_file(str(data), size, seed=12)
    slow = raw_receiver(server.portnum, "/slow?n=2", rcvbuf=32768)
    got = bytearray()
    state = {"gone": False}

    def read() -> None:
        # At most 32 KiB per 20 ms: seconds for what the kernels cannot
        # hold, longer than --stall-timeout, but never idle for long.
        try:
            more = slow.recv(32768)
        except BlockingIOError:
            return
        except ConnectionResetError:
            more = b""
        if more:
            got.extend(more)
        else:
            state["gone"] = True

    reader = task.LoopingCall(read)
    reader.clock = reactor
    reader.start(0.02)
    try:
        out = tmp_path / "fast"
        fast = procs.spawn(curl("-f", "-o", str(out), server.url("/slow?n=2")))
        yield server.wait_receivers("/slow", 2)
        sender = procs.spawn(curl("-f", "-T", str(data), server.url("/slow?n=2")))
        for proc in (fast, sender):
            yield helpers.with_timeout(proc.wait(), 60, proc.name)
            assert proc.exit_code == 0, proc.describe()
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        yield helpers.wait_for(
            lambda: len(bytes(got).partition(b"\r\n\r\n")[2]) >= size,
            timeout=30, what=f"the slow receiver's whole body ({len(got)} bytes, {state})",
        )
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        assert hashlib.sha256(body).hexdigest() == digest
        assert helpers.file_sha256(str(out)) == digest
        # Never cut, though (at most 32 KiB per 20 ms) it kept the pipe
        # paused for longer than the stall timeout, again and again.
        assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    finally:
        reader.stop()
        slow.close()
    yield server.wait_empty()
