"""Bigger reads (fastpath.READ_MIN..READ_MAX) keep SPEC §2's bound: the server
holds about one 64 KiB read per receiver, whatever the read size, because a
read is never bigger than what every receiver's kernel can take at once
plus READ_MIN. A bulk sender is read in BULK_BYTES gulps, yet bytes it
leaves short of one still go through at once, not when more come."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
import pytest_twisted
from twisted.internet import task, threads

from helpers import curl, file_has, file_sha256, make_file, sleep, wait_for, with_timeout

from pipeserver.http import fastpath

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


def _stop_time(server) -> task.Clock:
    """The pipes' clock, standing still until the test moves it: a sender
    then brings its first BULK_BYTES within one BULK_WINDOW however slowly
    it goes (here, a Python thread), and the bulk check runs only when the
    test advances the clock. Set before the pipe is made (it keeps its
    registry's clock)."""
    clock = task.Clock()
    server.registry.clock = clock
    return clock


@pytest_twisted.inlineCallbacks
def test_bytes_short_of_a_bulk_read_still_go_through(server, procs, tmp_path, marks):
    clock = _stop_time(server)
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-o", out, server.url("/bulk")), name="receiver")
    yield server.wait_receivers("/bulk", 1)
    block = bytes(range(256)) * 256  # 64 KiB
    tail = b"the last words"
    sender = yield threads.deferToThread(_chunked_sender, server.portnum, "/bulk")
    # 2 MiB in no time at all (on the pipe's clock): the pipe reads in bulk.
    count = 32
    yield threads.deferToThread(_send_chunks, sender, block, count)
    yield wait_for(lambda: fastpath.BULK_BYTES in marks, what="a bulk read")
    assert marks == [fastpath.BULK_BYTES], marks
    # Then 4 MiB more and, right behind them, a few bytes: the pipe reads
    # BULK_BYTES at a time while it can, and what is left short of one
    # waits for the check.
    yield threads.deferToThread(_send_chunks, sender, block, 64, tail)
    count += 64
    total = count * len(block) + len(tail)
    yield file_has(out, total - fastpath.BULK_BYTES, timeout=30.0)
    assert marks == [fastpath.BULK_BYTES], marks
    # The checks (one per BULK_WINDOW on the pipe's clock): once a window
    # brings less than BULK_BYTES, the pipe reads as bytes come, and the
    # rest goes through although the sender sends no more (nor ends its
    # body) until the receiver holds them all.
    checks = 0
    while os.path.getsize(out) < total:
        assert checks < 1000, (checks, os.path.getsize(out), marks)
        clock.advance(fastpath.BULK_WINDOW)
        checks += 1
        yield sleep(0.01)
    assert marks == [fastpath.BULK_BYTES, 1], marks
    yield threads.deferToThread(sender.sendall, b"0\r\n\r\n")
    reply = yield threads.deferToThread(_read_to_end, sender)
    yield receiver.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
    assert b"[INFO] Sent successfully!" in reply, reply
    expected = hashlib.sha256(block * count + tail).hexdigest()
    assert file_sha256(out) == expected


@pytest_twisted.inlineCallbacks
def test_a_counted_body_ends_without_waiting_for_the_check(server, procs, tmp_path, marks):
    # The pipe's clock stands still, so the bulk check never runs: the last
    # bytes of a Content-Length body must still come through, because the
    # bulk mark never asks for more than the body has left.
    _stop_time(server)
    src = str(tmp_path / "src")
    size = 32 * MiB + 12345
    expected = make_file(src, size, seed=3)
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-o", out, server.url("/counted")), name="receiver")
    yield server.wait_receivers("/counted", 1)
    sender = procs.spawn(curl("-T", src, server.url("/counted")), name="sender")
    yield with_timeout(receiver.wait(), 60.0, "the receiver to finish")
    yield with_timeout(sender.wait(), 60.0, "the sender to finish")
    assert receiver.exit_code == 0 and sender.exit_code == 0, sender.describe()
    assert file_sha256(out) == expected
    assert marks and marks[0] == fastpath.BULK_BYTES, marks
    assert min(marks[:-1] or marks) < fastpath.BULK_BYTES, marks  # the body's rest


@pytest_twisted.inlineCallbacks
def test_a_waiting_sender_keeps_at_most_one_head_read_of_its_body(server, procs, tmp_path):
    """Before its pipe forms a sender's body is not read (SPEC §2), but for
    what came in the read that brought its head: Twisted reads 64 KiB, so
    621 waiting senders of one client held 34 MB (bench/one_client.py
    h1-senders). Heads are read HEAD_READ at a time: 20 senders that push
    their bodies with their heads leave at most that each in the server;
    then receivers come and every byte arrives."""
    from abuse_support import connect

    size = 1 * MiB
    senders = []
    bodies = []
    for i in range(20):
        body = os.urandom(size)
        bodies.append(body)
        sender = yield connect(server.portnum)
        sender.send(f"PUT /head{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
                    + body[: 256 * KiB])
        senders.append(sender)
    yield wait_for(lambda: server.registry.waiting() == 20, what="the 20 senders waiting")
    yield sleep(0.3)
    held = server.registry.bytesHeld()
    print(f"20 waiting senders pushing their bodies: the server holds {held}")
    assert held <= 20 * fastpath.HEAD_READ, held
    receivers = []
    for i in range(20):
        out = str(tmp_path / f"out{i}")
        receivers.append((out, procs.spawn(curl("-f", "-o", out, server.url(f"/head{i}")),
                                           name=f"receiver {i}")))
    for i, sender in enumerate(senders):
        yield wait_for(lambda: streaming(server, f"/head{i}") or server.pipe(f"/head{i}") is None,
                       what=f"pipe {i} to start")
        sender.send(bodies[i][256 * KiB:])
    for i, (out, receiver) in enumerate(receivers):
        yield receiver.wait(timeout=30)
        assert receiver.exit_code == 0 and file_sha256(out) == hashlib.sha256(bodies[i]).hexdigest(), \
            receiver.describe()
    for sender in senders:
        sender.transport.loseConnection()
    yield server.wait_empty()
