# mypy: disable-error-code="var-annotated"
"""Pipes sharded by path over several instances behind HAProxy (issue 6).

Each test runs deploy/cluster.py (what `make cluster` runs): real ``twistd
pipe`` processes on loopback ports and Debian's HAProxy in front, hashing the
path alone (deploy/haproxy.cfg), with fast health checks and an
``X-Pipe-Instance`` response header naming the instance that served.
"""

from __future__ import annotations

import hashlib
import random
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import defer

import cluster_support as cs
import helpers
from helpers import curl

pytestmark = pytest.mark.skipif(
    cs.HAPROXY is None,
    reason="!!! HAPROXY NOT INSTALLED: the cluster tests (issue 6) did not run. "
    "Install Debian's haproxy (apt-get install haproxy; .ci/run does) !!!",
)


@pytest.fixture
def procs():
    spawned = helpers.Procs()
    yield spawned
    spawned.cleanup()


def bodies_differ(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@defer.inlineCallbacks
def pair(port: int, path: str, body: bytes, k: int, mode: str, order: str,
         headers=None, receiver_headers=None, timeout: float = 30.0):
    """One sender and ``k`` receivers on ``path``; returns (sender, [receivers])."""
    query = f"?n={k}" if k > 1 or order == "mixed" else ""
    send = lambda: cs.request(port, "PUT", path + query, body, headers, mode, timeout)  # noqa: E731
    recv = lambda: cs.request(port, "GET", path + query, None,  # noqa: E731
                              receiver_headers or headers, timeout=timeout)
    later = lambda delay, fn: helpers.sleep(delay).addCallback(lambda _: fn())  # noqa: E731
    if order == "sender-first":
        sender = send()
        receivers = [later(0.02, recv) for _ in range(k)]
    elif order == "receivers-first":
        receivers = [recv() for _ in range(k)]
        sender = later(0.02, send)
    else:  # some receivers before the sender, some after
        receivers = [recv() if i % 2 else later(0.03, recv) for i in range(k)]
        sender = later(0.01, send)
    results = yield defer.gatherResults([sender, *receivers], consumeErrors=True)
    return results[0], results[1:]


def check_pair(path, body, mode, sender, receivers):
    problems = []
    if not cs.sender_ok(sender):
        problems.append(f"{path}: sender {sender.status} {sender.body[-300:]!r}")
    want = hashlib.sha256(body).hexdigest()
    for i, r in enumerate(receivers):
        if r.status != 200 or not r.complete or r.sha256 != want:
            problems.append(f"{path}: receiver {i} {r.status} complete={r.complete} "
                            f"{len(r.body)}/{len(body)} bytes {r.raw[:200]!r}")
        elif (r.one("content-length") is not None) != (mode == "length"):
            problems.append(f"{path}: receiver {i} framing {r.headers}")
    return problems


@pytest_twisted.inlineCallbacks
def test_300_pipes_over_three_instances_all_verified_and_shared(procs):
    cluster = yield cs.start_cluster(procs, 3)
    rnd = random.Random(6)
    sizes = [0, 1, 1000, 65_536, 100_000, 250_000, 1_000_000]
    plan = []
    for i in range(300):
        path = f"/many/{i}-{rnd.randrange(1 << 32):08x}"
        plan.append((
            path,
            rnd.randbytes(rnd.choice(sizes)),
            rnd.choice([1, 1, 2, 3, 4]),
            rnd.choice(["chunked", "length"]),
            rnd.choice(["sender-first", "receivers-first", "mixed"]),
        ))
    limit = defer.DeferredSemaphore(40)
    started = time.monotonic()
    results = yield defer.gatherResults(
        [limit.run(pair, cluster.port, path, body, k, mode, order)
         for path, body, k, mode, order in plan],
        consumeErrors=True,
    )
    elapsed = time.monotonic() - started
    problems = []
    for (path, body, k, mode, _), (sender, receivers) in zip(plan, results):
        problems += check_pair(path, body, mode, sender, receivers)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:20])

    # Every request of a pipe was served by one instance; all got a share.
    expected = sum(1 + k for _, _, k, _, _ in plan)
    yield helpers.wait_for(
        lambda: sum(len(v) for v in cluster.served().values()) >= expected,
        timeout=10, what="every access line",
    )
    where = {}
    for name, requests in cluster.served().items():
        for method, path in requests:
            where.setdefault(path, set()).add(name)
    split = {p: names for p, names in where.items() if len(names) > 1}
    assert not split, f"pipes split over instances: {split}"
    senders = {name: sum(1 for m, _ in reqs if m == "PUT")
               for name, reqs in cluster.served().items()}
    print(f"300 pipes in {elapsed:.1f}s; senders per instance: {senders}")
    assert sum(senders.values()) == 300
    assert all(count >= 30 for count in senders.values()), senders
    yield cs.stop_cluster(cluster)


@defer.inlineCallbacks
def probe(port: int, path: str, timeout: float = 5.0):
    """(status, instance) of an OPTIONS on ``path``: answered at once."""
    reply = yield cs.request(port, "OPTIONS", path, timeout=timeout)
    return reply.status, reply.one("x-pipe-instance")


@pytest_twisted.inlineCallbacks
def test_an_instance_dies_its_paths_fail_fast_then_move_and_the_rest_go_on(procs):
    cluster = yield cs.start_cluster(procs, 3)
    port = cluster.port
    owner = {}
    for i in range(60):
        path = f"/kill/{i}"
        status, name = yield probe(port, path)
        assert status == 200 and name in cluster.instances, (status, name)
        owner[path] = name
    victim = "pipe2"
    doomed = [p for p, n in owner.items() if n == victim]
    kept = [p for p, n in owner.items() if n != victim]
    assert len(doomed) >= 3 and len(kept) >= 10, owner

    # In flight on a survivor: half of the body is through when pipe2 dies.
    first, rest = bodies_differ(1, 200_000), bodies_differ(2, 200_000)
    live = kept[0]
    sender = yield cs.connect(port, cs.head("PUT", live, {"Transfer-Encoding": "chunked"})
                              + b"%x\r\n" % len(first) + first + b"\r\n")
    receiver = yield cs.connect(port, cs.head("GET", live))
    yield helpers.wait_for(lambda: len(receiver.received) > len(first), timeout=10,
                           what="the first half at the receiver")
    # Waiting on the victim when it dies.
    stranded = yield cs.connect(port, cs.head("GET", doomed[0]))
    yield helpers.sleep(0.1)

    cluster.kill(victim)
    stranded_reply = yield cs.finish(stranded, timeout=30)
    # A new request for the victim's paths, before HAProxy marks it down:
    # refused (no retries, no redispatch to another instance).
    status, _ = yield probe(port, doomed[1], timeout=30)
    assert stranded_reply.status in (502, 503), stranded_reply.raw[:300]
    assert status in (502, 503), status

    # The survivor's transfer ends well.
    sender.write(b"%x\r\n" % len(rest) + rest + b"\r\n0\r\n\r\n")
    sent = yield cs.finish(sender, timeout=20)
    got = yield cs.finish(receiver, timeout=20)
    assert cs.sender_ok(sent), sent.body
    assert got.status == 200 and got.complete
    assert got.sha256 == hashlib.sha256(first + rest).hexdigest()

    # Marked down within a few checks: its paths work again, on survivors;
    # every other path stays where it was (consistent hashing).
    yield helpers.wait_for(lambda: f"/{victim} is DOWN" in cluster.proc.text,
                           timeout=10, what="HAProxy to mark the victim down")
    moved = {}
    for path in owner:
        status, name = yield probe(port, path)
        assert status == 200, (path, status)
        moved[path] = name
    assert all(moved[p] != victim for p in doomed), moved
    assert all(moved[p] == owner[p] for p in kept), {p: (owner[p], moved[p]) for p in kept}

    results = yield defer.gatherResults(
        [pair(port, path, bodies_differ(i, 50_000), 2, "chunked", "mixed", timeout=20)
         for i, path in enumerate(doomed + kept[1:10])],
        consumeErrors=True,
    )
    problems = []
    for i, (path, (s, rs)) in enumerate(zip(doomed + kept[1:10], results)):
        problems += check_pair(path, bodies_differ(i, 50_000), "chunked", s, rs)
        problems += [f"{path} served by {r.one('x-pipe-instance')}"
                     for r in rs if r.one("x-pipe-instance") != moved[path]]
    assert not problems, "\n".join(problems)
    yield cs.stop_cluster(cluster)


def token_line(project: str, token: str) -> str:
    return f"{project} {hashlib.sha256(token.encode()).hexdigest()}\n"


@pytest_twisted.inlineCallbacks
def test_two_tokens_of_one_project_meet_through_the_balancer(procs, tmp_path):
    a1, a2, b = "alpha-one-0123456789", "alpha-two-0123456789", "beta-only-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(token_line("alpha", a1) + token_line("alpha", a2) + token_line("beta", b))
    cluster = yield cs.start_cluster(procs, 3, "--tokens", str(tokens))
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    alpha_body, beta_body = bodies_differ(10, 120_000), bodies_differ(11, 90_000)
    results = yield defer.gatherResults([
        pair(cluster.port, "/shared/report", alpha_body, 1, "length", "receivers-first",
             headers=bearer(a1), receiver_headers=bearer(a2)),
        pair(cluster.port, "/shared/report", beta_body, 1, "chunked", "sender-first",
             headers=bearer(b)),
    ], consumeErrors=True)
    (alpha_sender, alpha_receivers), (beta_sender, beta_receivers) = results
    problems = check_pair("alpha", alpha_body, "length", alpha_sender, alpha_receivers)
    problems += check_pair("beta", beta_body, "chunked", beta_sender, beta_receivers)
    assert not problems, problems
    # Both projects' pipes on one path lived on one instance, kept apart there.
    instances = {r.one("x-pipe-instance") for r in alpha_receivers + beta_receivers}
    assert len(instances) == 1, instances
    no_token = yield cs.request(cluster.port, "GET", "/shared/report", timeout=5)
    assert no_token.status == 401
    yield cs.stop_cluster(cluster)


@pytest_twisted.inlineCallbacks
def test_curl_senders_through_haproxy_get_their_whole_log_and_ctrl_c_stops_all(procs, tmp_path):
    # curl sends `Expect: 100-continue`: deploy/haproxy.cfg must keep the
    # sender's progress log whole (HAProxy 2.6 cuts it otherwise).
    cluster = yield cs.start_cluster(procs, 2)
    base = f"http://127.0.0.1:{cluster.port}"
    big = tmp_path / "big"
    digest = helpers.make_file(str(big), 3_000_000, seed=3)
    first, rest = tmp_path / "first", tmp_path / "rest"
    helpers.make_file(str(first), 100_000, seed=4)
    helpers.make_file(str(rest), 100_000, seed=5)
    streamed = hashlib.sha256(first.read_bytes() + rest.read_bytes()).hexdigest()
    gate = str(tmp_path / "gate")

    r1 = procs.spawn(curl("-f", base + "/curl/file?n=2"))
    r2 = procs.spawn(curl("-f", base + "/curl/file?n=2"))
    s1 = procs.spawn(curl("-f", "-T", str(big), base + "/curl/file?n=2"))
    _, s2 = procs.pipeline(helpers.gated(str(first), gate, str(rest)),
                           curl("-f", "-T", "-", base + "/curl/stream"))
    r3 = procs.spawn(curl("-f", base + "/curl/stream"))
    yield helpers.has_received(r3, 100_000, timeout=15)
    helpers.open_gate(gate)
    for proc in (r1, r2, s1, s2, r3):
        yield proc.wait(timeout=30)
        assert proc.exit_code == 0, proc.describe()
    assert r1.sha256 == r2.sha256 == digest
    assert r3.sha256 == streamed
    for sender in (s1, s2):
        assert sender.lines()[0] == "[INFO] Waiting for 1 receiver(s)..." or \
            sender.lines()[0] == "[INFO] Waiting for 2 receiver(s)...", sender.text
        assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully.", \
            sender.text

    yield cs.stop_cluster(cluster, signal.SIGINT)  # what Ctrl-C sends
    assert cluster.proc.exit_code == 0, cluster.proc.describe()
    assert "[cluster] haproxy" in cluster.proc.text and "Server Shut Down." in cluster.proc.text
