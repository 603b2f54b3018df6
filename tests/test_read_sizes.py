"""Bigger reads (fastpath.READ_MIN..READ_MAX) keep SPEC §2's bound: the server
holds about one 64 KiB read per receiver, whatever the read size, because a
read is never bigger than what every receiver's kernel can take at once
plus READ_MIN. A bulk sender is read in BULK_BYTES gulps, yet bytes it
leaves short of one still go through at once, not when more come."""

from __future__ import annotations

import hashlib
import socket

import pytest
import pytest_twisted
from twisted.internet import threads

from helpers import curl, file_has, file_sha256, make_file, sleep, wait_for, with_timeout

from pipeserver import fastpath

KiB = 1024
MiB = 1024 * KiB


def streaming(server, path):
    p = server.pipe(path)
    return p is not None and p.state.name == "STREAMING"


@pytest_twisted.inlineCallbacks
def test_held_bytes_stay_near_one_small_read_per_receiver(server, procs, tmp_path):
    src = str(tmp_path / "src")
    size = 24 * MiB
    expected = make_file(src, size, seed=7)
    url = server.url("/rs?n=2")
    out_fast, out_slow = str(tmp_path / "fast"), str(tmp_path / "slow")
    fast = procs.spawn(curl("-o", out_fast, url), name="fast receiver")
    slow = procs.spawn(curl("--limit-rate", "4M", "-o", out_slow, url), name="slow receiver")
    yield server.wait_receivers("/rs", 2)
    sender = procs.spawn(curl("-T", "-", url), stdin=src, name="sender")
    yield wait_for(lambda: streaming(server, "/rs"), what="the pipe to stream")
    worst = 0
    reads = set()
    while not slow.finished:
        worst = max(worst, server.registry.bytesHeld())
        p = server.pipe("/rs")
        if p is not None and p.sender is not None:
            reads.add(getattr(p.sender.transport, "bufferSize", 0))
        yield sleep(0.01)
    yield fast.wait()
    yield sender.wait()
    assert fast.exit_code == 0 and slow.exit_code == 0
    assert file_sha256(out_fast) == expected and file_sha256(out_slow) == expected
    assert sender.exit_code == 0, sender.describe()
    # 2 receivers: about a 64 KiB read each (seen: 67 KiB in all).
    assert worst <= 2 * (fastpath.READ_MIN + 32 * KiB), worst
    assert all(fastpath.READ_MIN <= r <= fastpath.READ_MAX for r in reads if r), reads


@pytest.fixture
def marks(monkeypatch):
    """Every SO_RCVLOWAT the pipes set on senders, in order."""
    seen = []
    set_low_water = fastpath.ReadPacer.setLowWater

    def spy(pacer, size):
        seen.append(size)
        set_low_water(pacer, size)

    monkeypatch.setattr(fastpath.ReadPacer, "setLowWater", spy)
    return seen


def _chunked_sender(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"PUT " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    return sock


def _send_chunks(sock: socket.socket, block: bytes, count: int, tail: bytes = b"") -> None:
    frame = b"%x\r\n" % len(block) + block + b"\r\n"
    for _ in range(count):
        sock.sendall(frame)
    if tail:
        sock.sendall(b"%x\r\n" % len(tail) + tail + b"\r\n")


def _read_to_end(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"All receiver(s) was/were received successfully." not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    sock.close()
    return data


@pytest_twisted.inlineCallbacks
def test_bytes_short_of_a_bulk_read_still_go_through(server, procs, tmp_path, marks):
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-o", out, server.url("/bulk")), name="receiver")
    yield server.wait_receivers("/bulk", 1)
    block = bytes(range(256)) * 256  # 64 KiB
    tail = b"the last words"
    sender = yield threads.deferToThread(_chunked_sender, server.portnum, "/bulk")
    count = 0
    # At full speed until the pipe reads in bulk (the first 4 MiB do it
    # unless the machine is very busy) ...
    while fastpath.BULK_BYTES not in marks and count < 4096:
        yield threads.deferToThread(_send_chunks, sender, block, 64)
        count += 64
    assert fastpath.BULK_BYTES in marks, marks
    # ... then 4 MiB more and, right behind them, a few bytes.
    yield threads.deferToThread(_send_chunks, sender, block, 64, tail)
    count += 64
    # Far fewer than BULK_BYTES are left unread, and the sender sends no more
    # (nor ends its body) until the receiver holds them all.
    yield file_has(out, count * len(block) + len(tail), timeout=5.0)
    assert marks[-1] == 1, marks
    yield threads.deferToThread(sender.sendall, b"0\r\n\r\n")
    reply = yield threads.deferToThread(_read_to_end, sender)
    yield receiver.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
    assert b"[INFO] Sent successfully!" in reply, reply
    expected = hashlib.sha256(block * count + tail).hexdigest()
    assert file_sha256(out) == expected


@pytest_twisted.inlineCallbacks
def test_a_counted_body_ends_without_waiting_for_the_check(
    server, procs, tmp_path, monkeypatch, marks
):
    # With the 5 ms check pushed out to a minute, the last bytes of a
    # Content-Length body must still come through at once: the bulk mark
    # never asks for more than the body has left.
    monkeypatch.setattr(fastpath, "BULK_WINDOW", 60.0)
    src = str(tmp_path / "src")
    size = 32 * MiB + 12345
    expected = make_file(src, size, seed=3)
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-o", out, server.url("/counted")), name="receiver")
    yield server.wait_receivers("/counted", 1)
    sender = procs.spawn(curl("-T", src, server.url("/counted")), name="sender")
    yield with_timeout(receiver.wait(), 20.0, "the receiver to finish")
    yield with_timeout(sender.wait(), 20.0, "the sender to finish")
    assert receiver.exit_code == 0 and sender.exit_code == 0, sender.describe()
    assert file_sha256(out) == expected
    assert marks and marks[0] == fastpath.BULK_BYTES, marks
    assert min(marks[:-1] or marks) < fastpath.BULK_BYTES, marks  # the body's rest
