# mypy: disable-error-code="arg-type,misc"
"""Soak: many concurrent transfers over real sockets, and many clients killed
at random moments. Raw-socket clients on the reactor (no curl processes)."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import defer

from abuse_support import (
    FailureLog,
    assert_received,
    assert_sent,
    assert_truncated,
    body_bytes,
    chunk,
    chunked_body,
    connect,
    get_request,
    normal_pair,
    raise_nofile,
)
from helpers import sleep, wait_for

PAIRS = 1000
KILLED = 200


@pytest.fixture
def failures():
    with FailureLog() as log:
        yield log
    assert log.events == [], log.describe()


def upload_head(path: str, size: int, chunked: bool, method: str = "PUT") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % size


@defer.inlineCallbacks
def one_transfer(server, i: int, rnd: random.Random):
    """A sender and n receivers on their own path, joining in a random order
    with random delays; every receiver gets the body, sha256-checked."""
    n = rnd.choice([1, 2, 3])
    chunked = rnd.random() < 0.5
    body = body_bytes(rnd.randint(4096, 65536), i)
    path = f"/soak/{i}?n={n}"
    order = ["sender"] + ["receiver"] * n
    rnd.shuffle(order)
    delays = sorted(rnd.uniform(0, 1.5) for _ in order)
    method = rnd.choice(["PUT", "POST"])
    sender, receivers, elapsed = None, [], 0.0
    for who, at in zip(order, delays):
        if at > elapsed:
            yield sleep(at - elapsed)
            elapsed = at
        client = yield connect(server.portnum)
        if who == "sender":
            sender = client
            payload = chunked_body(body, rnd.randint(1, 6), rnd) if chunked else body
            client.send(upload_head(path, len(body), chunked, method) + payload)
        else:
            client.send(get_request(path))
            receivers.append(client)
    for client in receivers + [sender]:
        yield client.wait_closed(60, f"transfer {i} to end")
    for client in receivers:
        assert_received(client, body, chunked=chunked)
    assert_sent(sender, n)
    return n


@pytest_twisted.inlineCallbacks
def test_thousand_concurrent_pairs(make_server, failures):
    raise_nofile(PAIRS * 4 * 2 + 1000)
    server = make_server("--max-waiting", "100000", "--max-waiting-per-project", "100000")
    rnd = random.Random(2024)
    seeds = [random.Random(rnd.random()) for _ in range(PAIRS)]
    peak = [0]
    sampling = [True]

    @defer.inlineCallbacks
    def sample():
        while sampling[0]:
            peak[0] = max(peak[0], len(server.registry.pipes))
            yield sleep(0.01)

    sampler = sample()
    try:
        results = yield defer.gatherResults(
            [one_transfer(server, i, seeds[i]) for i in range(PAIRS)], consumeErrors=True
        )
    finally:
        sampling[0] = False
        yield sampler
    # They did overlap: hundreds of pipes were open at once.
    assert peak[0] >= 200, peak[0]
    assert len(results) == PAIRS
    assert set(results) == {1, 2, 3}
    yield server.wait_empty(timeout=5)
    assert server.registry.waiting() == 0
    assert server.registry.counts.get("completed") == PAIRS
    assert server.registry.counts.get("established") == PAIRS
    yield normal_pair(server)


# ---------------------------------------------------------------- killed clients


@defer.inlineCallbacks
def killed_transfer(server, i: int, rnd: random.Random, outcomes: dict):
    """One transfer in which one party is killed at a random moment.

    * ``mid-head``: it dies before its request is complete; a full transfer
      on the path then works.
    * ``waiting``: it dies while the pipe waits for a last party; a
      replacement and that last party then complete the transfer with the
      parties who stayed.
    * ``streaming``: it dies mid-body. A dead sender leaves every receiver
      with a truncated response; a dead receiver leaves the others a
      complete one (n=2) or the sender told and closed (n=1).
    """
    n = rnd.choice([1, 2])
    chunked = rnd.random() < 0.5
    rst = rnd.random() < 0.5
    victim = rnd.choice(["sender", "receiver"])
    moment = rnd.choice(["mid-head", "waiting", "streaming"])
    outcomes[(victim, moment)] = outcomes.get((victim, moment), 0) + 1
    path = f"/k/{i}?n={n}"
    first = body_bytes(rnd.randint(1000, 30000), i)
    rest = body_bytes(rnd.randint(1000, 30000), 100000 + i)
    whole = first + rest
    head = upload_head(path, len(whole), chunked)
    part1 = chunk(first) if chunked else first
    part2 = chunk(rest) + chunk(b"") if chunked else rest
    pipe = lambda: server.pipe(path)  # noqa: E731

    def sender_request():
        return head + part1 + part2

    @defer.inlineCallbacks
    def party(who, data):
        c = yield connect(server.portnum)
        c.send(data)
        c.who = who
        return c

    @defer.inlineCallbacks
    def parties_of(who, data, count):
        out = []
        for _ in range(count):
            out.append((yield party(who, data)))
        return out

    @defer.inlineCallbacks
    def complete(parties):
        """Every one of ``parties`` ends well."""
        for c in parties:
            yield c.wait_closed(30, f"transfer {i} to end")
        for c in parties:
            if c.who == "sender":
                assert_sent(c, n)
            else:
                assert_received(c, whole, chunked=chunked)

    if moment == "mid-head":
        data = head if victim == "sender" else get_request(path)
        c = yield party(victim, data[: rnd.randint(1, len(data) - 1)])
        yield sleep(rnd.uniform(0, 0.3))
        c.kill(rst)
        yield c.wait_closed(5)
        parties = (yield parties_of("receiver", get_request(path), n))
        parties.append((yield party("sender", sender_request())))
        yield complete(parties)
        return

    if moment == "waiting":
        # Everyone but one last receiver (or the sender, if the victim is
        # the lone receiver of n=1) joins; the victim is one of them.
        if victim == "receiver":
            doomed = yield party("receiver", get_request(path))
            stayers = (yield parties_of("receiver", get_request(path), n - 1))
            yield wait_for(lambda: pipe() is not None and len(pipe().receivers) == n, what="receivers in")
            doomed.kill(rst)
            yield wait_for(lambda: pipe() is None or len(pipe().receivers) == n - 1, what="the dead receiver to go")
            stayers.append((yield party("receiver", get_request(path))))
            stayers.append((yield party("sender", sender_request())))
        else:
            doomed = yield party("sender", sender_request())
            stayers = (yield parties_of("receiver", get_request(path), n - 1))
            yield wait_for(lambda: pipe() is not None and pipe().sender is not None, what="the sender in")
            doomed.kill(rst)
            yield wait_for(lambda: pipe() is None or pipe().sender is None, what="the dead sender to go")
            stayers.append((yield party("sender", sender_request())))
            stayers.append((yield party("receiver", get_request(path))))
        yield doomed.wait_closed(5)
        yield complete(stayers)
        return

    # streaming
    receivers = (yield parties_of("receiver", get_request(path), n))
    sender = yield party("sender", head + part1)
    for r in receivers:
        yield wait_for(lambda r=r: r.nbytes > 300, timeout=15, what="the stream to start")
    if victim == "sender":
        sender.kill(rst)
        for r in receivers:
            yield r.wait_closed(5, "a receiver to be cut")
            assert_truncated(r)
            assert whole.startswith(r.response().body)
        return
    doomed, others = receivers[0], receivers[1:]
    doomed.kill(rst)
    yield wait_for(lambda: pipe() is None or len(pipe().receivers) == n - 1, what="the dead receiver to go")
    if others:
        sender.send(part2)
        yield complete(others)
        yield sender.wait_closed(10)
        lines = sender.response().text.splitlines()
        assert "[INFO] A receiver aborted." in lines, lines
        assert lines[-1] == "[INFO] 1 of 2 receiver(s) received successfully.", lines
        assert sender.response().complete
    else:
        yield sender.wait_closed(15, "the sender to be told")
        lines = sender.response().text.splitlines()
        assert lines[-2:] == [
            "[INFO] A receiver aborted.",
            "[INFO] All receiver(s) was/were aborted halfway.",
        ], lines
        assert not sender.response().complete


@pytest_twisted.inlineCallbacks
def test_clients_killed_at_random_moments(make_server, failures):
    raise_nofile(KILLED * 10 + 1000)
    server = make_server()
    rnd = random.Random(77)
    outcomes: dict = {}
    yield defer.gatherResults(
        [
            killed_transfer(server, i, random.Random(rnd.random()), outcomes)
            for i in range(KILLED)
        ],
        consumeErrors=True,
    )
    # Every kind of death happened.
    assert len(outcomes) == 6, outcomes
    yield server.wait_empty(timeout=5)
    assert server.registry.waiting() == 0
    # Every path is free: a fresh transfer works on a sample of them.
    for i in random.Random(5).sample(range(KILLED), 10):
        yield normal_pair(server, path=f"/k/{i}?n=1")
