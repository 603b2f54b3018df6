"""Bigger reads (pipe.READ_MIN..READ_MAX) keep SPEC §2's bound: the server
holds about one 64 KiB read per receiver, whatever the read size, because a
read is never bigger than what every receiver's kernel can take at once
plus READ_MIN."""

from __future__ import annotations

import pytest_twisted

from helpers import curl, file_sha256, make_file, sleep, wait_for

from pipeserver import pipe as pipe_module

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
    assert worst <= 2 * (pipe_module.READ_MIN + 32 * KiB), worst
    assert all(pipe_module.READ_MIN <= r <= pipe_module.READ_MAX for r in reads if r), reads
