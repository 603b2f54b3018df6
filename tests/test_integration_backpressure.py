"""Backpressure and memory (SPEC §2), with the server in this process.

A receiver that does not read must stop the sender: once nothing can move,
the server's own buffers (``registry.bytesHeld()``, the transports' write
buffers) hold a read or so per receiver, and the pipe has read no more than
the kernels' buffers between. (The process's memory is bench/'s to measure.)
No body byte is ever written to a file: the test looks at this process's
open file descriptors mid-transfer.
"""

from __future__ import annotations

import select
import tempfile

import pytest_twisted
from twisted.internet import reactor

from helpers import (
    curl,
    file_sha256,
    gated,
    has_received,
    make_file,
    open_files_for_writing,
    open_gate,
    reset_close,
    sleep,
    stalled_receiver,
    wait_for,
)

from pipeserver.http.fastpath import buffered_bytes

MiB = 1024 * 1024


def streaming(server, path):
    pipe = server.pipe(path)
    return pipe is not None and pipe.state.name == "STREAMING"


def stopped(server, path, stalled):
    """True once nothing can move on ``path``: the stalled receiver's
    transport has paused the pipe (its write buffer is over its size) and
    its socket is not writable (its client reads nothing, so both last),
    and the reactor no longer reads the sender."""
    pipe = server.pipe(path)
    if pipe is None or pipe.sender is None:
        return False
    port = stalled.getsockname()[1]
    for download in pipe.receivers:
        transport = download.transport
        if transport.getPeer().port == port:
            _, writable, _ = select.select([], [transport.getHandle()], [], 0)
            return (
                transport.producerPaused
                and not writable
                and pipe.sender.transport not in reactor.getReaders()
            )
    return False


def held(server, path):
    """What the server holds for the pipe in user space: the registry's
    count, and each party's transport write buffer (checked by hand)."""
    pipe = server.pipe(path)
    buffers = sum(
        buffered_bytes(party.transport) for party in [pipe.sender, *pipe.receivers]
    )
    return server.registry.bytesHeld(), buffers


@pytest_twisted.inlineCallbacks
def test_stalled_receiver_stops_the_sender(server, procs):
    size = 256 * MiB
    url = server.url("/bp")
    sock = stalled_receiver("127.0.0.1", server.portnum, "/bp")
    try:
        yield server.wait_receivers("/bp", 1)
        gen, sender = procs.pipeline(
            ["head", "-c", str(size), "/dev/zero"], curl("-T", "-", url)
        )
        yield wait_for(lambda: stopped(server, "/bp", sock), what="the sender to be stopped")
        pipe = server.pipe("/bp")
        # About one read (64 KiB) and the transport's own buffer size.
        registry_held, buffers = held(server, "/bp")
        assert registry_held < 1 * MiB, registry_held
        assert buffers < 1 * MiB, buffers
        # The kernel's socket buffers hold a few MiB; the rest must wait upstream.
        assert pipe.bytes < 32 * MiB, pipe.bytes
        assert not sender.finished, sender.describe()
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
        yield wait_for(lambda: stopped(server, "/bp", sock), what="the sender to be stopped")
        pipe = server.pipe("/bp")
        registry_held, buffers = held(server, "/bp")
        assert registry_held < 1 * MiB, registry_held
        assert buffers < 1 * MiB, buffers
        # The fast receiver can get no more than the pipe read.
        assert pipe.bytes < 24 * MiB, pipe.bytes
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
