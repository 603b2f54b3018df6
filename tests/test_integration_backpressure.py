"""Backpressure and memory (SPEC §2), with the server in this process.

A receiver that does not read must stop the sender: the server's own buffers
(``registry.bytesHeld()``) stay under a read or so per receiver, and this
process's RSS does not grow with the body. No body byte is ever written to a
file: the test looks at this process's open file descriptors mid-transfer.
"""

from __future__ import annotations

import tempfile

import pytest_twisted

from helpers import (
    curl,
    file_sha256,
    gated,
    has_received,
    make_file,
    open_files_for_writing,
    open_gate,
    reset_close,
    rss_bytes,
    sleep,
    stalled_receiver,
    wait_for,
)

MiB = 1024 * 1024


def streaming(server, path):
    pipe = server.pipe(path)
    return pipe is not None and pipe.state.name == "STREAMING"


@pytest_twisted.inlineCallbacks
def sample(server, seconds, limit=1 * MiB, every=0.05):
    """Poll bytesHeld() for ``seconds``; assert it stays under ``limit``."""
    worst = 0
    for _ in range(int(seconds / every)):
        held = server.registry.bytesHeld()
        worst = max(worst, held)
        assert held < limit, f"the server holds {held} bytes"
        yield sleep(every)
    return worst


@pytest_twisted.inlineCallbacks
def test_stalled_receiver_stops_the_sender(server, procs):
    size = 256 * MiB
    url = server.url("/bp")
    rss_before = rss_bytes()
    sock = stalled_receiver("127.0.0.1", server.portnum, "/bp")
    try:
        yield server.wait_receivers("/bp", 1)
        gen, sender = procs.pipeline(
            ["head", "-c", str(size), "/dev/zero"], curl("-T", "-", url)
        )
        yield wait_for(lambda: streaming(server, "/bp"), what="the pipe to stream")
        pipe = server.pipe("/bp")
        yield sample(server, 3.0)
        # The kernel's socket buffers hold a few MiB; the rest must wait upstream.
        assert pipe.bytes < 32 * MiB, pipe.bytes
        assert not sender.finished, sender.describe()
        growth = rss_bytes() - rss_before
        assert growth < 20 * MiB, f"RSS grew by {growth} bytes"
    finally:
        reset_close(sock)
    yield sender.wait(timeout=30)
    assert sender.exit_code != 0, sender.describe()
    assert sender.lines()[-2:] == [
        "[INFO] A receiver aborted.",
        "[INFO] All receiver(s) was/were aborted halfway.",
    ], sender.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_slowest_receiver_sets_the_pace(server, procs, tmp_path):
    """n=2: while one receiver is stalled, the other gets no more than the
    buffers between; once the stalled one goes, the other gets everything."""
    src = str(tmp_path / "src")
    size = 48 * MiB
    expected = make_file(src, size, seed=48)
    url = server.url("/bp?n=2")
    sock = stalled_receiver("127.0.0.1", server.portnum, "/bp?n=2")
    try:
        yield server.wait_receivers("/bp", 1)
        fast = procs.spawn(curl(url), name="fast receiver", keep=False)
        yield server.wait_receivers("/bp", 2)
        sender = procs.spawn(curl("-T", "-", url), stdin=src, name="sender")
        yield wait_for(lambda: streaming(server, "/bp"), what="the pipe to stream")
        yield has_received(fast, 1)
        yield sample(server, 1.5)
        assert fast.nbytes < 24 * MiB, fast.nbytes
        assert not fast.finished
    finally:
        reset_close(sock)
    yield fast.wait(timeout=60)
    yield sender.wait(timeout=30)
    assert fast.exit_code == 0, fast.describe()
    assert fast.nbytes == size and fast.sha256 == expected
    assert sender.exit_code == 0, sender.describe()
    assert sender.lines()[-3:] == [
        "[INFO] A receiver aborted.",
        "[INFO] Sent successfully!",
        "[INFO] 1 of 2 receiver(s) received successfully.",
    ], sender.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_rate_limited_receiver_completes(server, procs, tmp_path):
    src = str(tmp_path / "src")
    size = 6 * MiB
    expected = make_file(src, size, seed=6)
    url = server.url("/slow")
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("--limit-rate", "3M", "-o", out, url), name="receiver")
    yield server.wait_receivers("/slow", 1)
    sender = procs.spawn(curl("-T", src, url), name="sender")
    # The kernel's socket buffers may take all 6 MiB at once, so the pipe
    # can be streaming for less than one poll: its end counts as well.
    yield wait_for(
        lambda: streaming(server, "/slow") or sender.finished,
        what="the pipe to stream",
    )
    while not receiver.finished:
        assert server.registry.bytesHeld() < 1 * MiB
        yield sleep(0.05)
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert file_sha256(out) == expected
    assert sender.exit_code == 0, sender.describe()
    yield server.wait_empty()


def test_detector_sees_temporary_files():
    """The check below would see a spooled body (a TemporaryFile)."""
    before = open_files_for_writing()
    with tempfile.TemporaryFile() as spool:
        spool.write(b"x")
        assert set(open_files_for_writing()) - set(before)
    assert open_files_for_writing() == before


@pytest_twisted.inlineCallbacks
def test_no_file_is_written_during_a_transfer(server, procs, tmp_path):
    """Mid-transfer, for a chunked body and for a Content-Length over the
    size stock twisted.web spools to disk, no file is open for writing."""
    first, rest = str(tmp_path / "first"), str(tmp_path / "rest")
    make_file(first, 400_000, seed=1)
    make_file(rest, 400_000, seed=2)
    before = open_files_for_writing()
    transfers = []
    for i, extra in enumerate(
        [[], ["-H", "Transfer-Encoding:", "-H", "Content-Length: 800000"]]
    ):
        path = f"/nodisk{i}"
        gate = str(tmp_path / f"gate{i}")
        gen, sender = procs.pipeline(
            gated(first, gate, rest), curl("-T", "-", *extra, server.url(path))
        )
        receiver = procs.spawn(curl(server.url(path)), name=f"receiver{i}", keep=False)
        transfers.append((gate, sender, receiver))
    for gate, sender, receiver in transfers:
        yield has_received(receiver, 400_000)
    during = open_files_for_writing()
    assert set(during) - set(before) == set(), during
    for gate, sender, receiver in transfers:
        open_gate(gate)
        yield receiver.wait()
        yield sender.wait()
        assert receiver.exit_code == 0 and receiver.nbytes == 800_000, receiver.describe()
        assert sender.exit_code == 0, sender.describe()
    yield server.wait_empty()
