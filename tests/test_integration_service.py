# mypy: disable-error-code="arg-type,attr-defined"
"""Service paths over real sockets (SPEC §12): replicas of a consumer on a
``?queue`` path, readers joining a ``?live`` stream; with curl (HTTP/1.1 and
HTTP/2 by prior knowledge), raw sockets for readers that do not read."""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
from typing import Dict, List

import pytest
import pytest_twisted
from twisted.internet import reactor

import hangup_support as hangup
import helpers
from abuse_support import chunk
from h2_support import h2clients  # noqa: F401  (fixture)
from helpers import CURL_PARTIAL_FILE, Proc, curl, sleep, wait_for
from pipeserver import errors


def spawn_group(procs: helpers.Procs, name: str, script: str, *args: str) -> Proc:
    """``sh -c script`` in a process group of its own, so that killing it
    kills the curl it runs too."""
    proc = Proc(name, group=True)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        reactor.spawnProcess(
            proc, "setsid", ["setsid", "sh", "-c", script, name, *args],
            env=procs._env, childFDs={0: devnull, 1: "r", 2: "r"},
        )
    finally:
        os.close(devnull)
    procs.all.append(proc)
    return proc


def queue_waiting(server: helpers.Server, path: str) -> tuple:
    line = server.registry.queues.get(("", path.encode()))
    return (0, 0) if line is None else line.depth()


# ------------------------------------------------------------------ ?queue

#: Per producer; the issue's worker pool: 4 consumer loops, 2 producers.
MESSAGES = int(os.environ.get("SERVICE_TEST_MESSAGES", "500"))

CONSUMER = (
    # The README's consumer loop, each message kept in a file of its own.
    'i=0; while curl -fsS -N --noproxy "*" -o "$2/$1.$(printf %05d $i)" "$3"; '
    'do i=$((i+1)); done; echo "loop ended: $?" >&2'
)
PRODUCER = (
    'for f in "$2"/*; do curl -fsS --noproxy "*" -T "$f" "$3" >/dev/null'
    ' || echo "FAILED $f"; done'
)


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "h2c"])
@pytest_twisted.inlineCallbacks
def test_a_worker_pool_gets_every_message_exactly_once(
    make_server, procs, tmp_path, http2
):
    server = make_server()
    url = server.url("/jobs?queue")
    if http2:
        CONSUMER_ = CONSUMER.replace("curl -fsS", "curl --http2-prior-knowledge -fsS")
        PRODUCER_ = PRODUCER.replace("curl -fsS", "curl --http2-prior-knowledge -fsS")
    else:
        CONSUMER_, PRODUCER_ = CONSUMER, PRODUCER
    # Over HTTP/2 each curl is a new connection, and the connections of one
    # address share a budget of control frames (http2.BUDGETS: 100, then
    # 20/s) that a loop of curls from one address overdraws past ~120 of them.
    messages = MESSAGES if not http2 else min(MESSAGES, 10)
    expected: Dict[str, tuple] = {}
    for producer in range(2):
        folder = tmp_path / f"in{producer}"
        folder.mkdir()
        for index in range(messages):
            body = f"producer {producer} message {index:05d}\n".encode() * random.randint(1, 300)
            (folder / f"{index:05d}").write_bytes(body)
            expected[hashlib.sha256(body).hexdigest()] = (producer, index)
    out = tmp_path / "out"
    out.mkdir()
    consumers = [
        spawn_group(procs, f"c{n}", CONSUMER_, f"c{n}", str(out), url) for n in range(4)
    ]
    yield wait_for(lambda: queue_waiting(server, "/jobs") == (0, 4), 10, what="4 consumers")
    producers = [
        spawn_group(procs, f"p{n}", PRODUCER_, f"p{n}", str(tmp_path / f"in{n}"), url)
        for n in range(2)
    ]
    for sending in producers:
        yield sending.wait(timeout=300)
        assert sending.exit_code == 0 and sending.text == "", sending.describe()
    total = 2 * messages
    # Every consumer waits again for the next message, each loop still runs.
    yield wait_for(lambda: queue_waiting(server, "/jobs") == (0, 4), 20, what="4 waiting")
    assert not any(c.finished for c in consumers), [c.describe() for c in consumers]
    files = sorted(os.listdir(out))
    got: Dict[str, List[tuple]] = {}
    for name in files:
        body = (out / name).read_bytes()
        got.setdefault(hashlib.sha256(body).hexdigest(), []).append(name)
    assert len(files) == total
    assert set(got) == set(expected) and all(len(v) == 1 for v in got.values())
    # Each consumer took each producer's messages in the order they were sent.
    for consumer in range(4):
        mine = [expected[hashlib.sha256((out / n).read_bytes()).hexdigest()]
                for n in files if n.startswith(f"c{consumer}.")]
        for producer in range(2):
            order = [index for p, index in mine if p == producer]
            assert order == sorted(order)
    # The work was shared.
    assert sum(1 for c in range(4) if any(n.startswith(f"c{c}.") for n in files)) >= 2
    assert not any(k.startswith("rejected") for k in server.registry.counts)
    assert server.registry.counts["completed"] == total
    for loop in consumers:
        loop.kill()
    yield server.wait_empty(timeout=10)
    assert server.registry.waiting() == 0


@pytest_twisted.inlineCallbacks
def test_queue_senders_wait_in_order_and_a_plain_receiver_lines_up(make_server, procs, tmp_path):
    server = make_server()
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first\n")
    second.write_bytes(b"second\n")
    s1 = procs.spawn(curl("-fsS", "-T", str(first), server.url("/q?queue")))
    yield wait_for(lambda: queue_waiting(server, "/q") == (1, 0), 10)
    s2 = procs.spawn(curl("-fsS", "-T", str(second), server.url("/q?queue")))
    yield wait_for(lambda: queue_waiting(server, "/q") == (2, 0), 10)
    # No ?queue: it lines up all the same, and gets the oldest message.
    r1 = procs.spawn(curl("-fsS", server.url("/q")))
    yield wait_for(lambda: queue_waiting(server, "/q") == (1, 0), 10)  # r1 came first
    r2 = procs.spawn(curl("-fsS", server.url("/q?queue")))
    for proc in (s1, s2, r1, r2):
        yield proc.wait(timeout=20)
        assert proc.exit_code == 0, proc.describe()
    assert (r1.text, r2.text) == ("first\n", "second\n")
    assert s1.lines() == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 1 receiver(s)!",
        "[INFO] Sent successfully!",
        "[INFO] All receiver(s) was/were received successfully.",
    ]


# ------------------------------------------------------------------ 400s

CONFLICTS = [
    ("PUT", "/x?queue&n=2",
     "[ERROR] ?queue cannot be used with ?n=2: a queue gives each message to one receiver."
     " Drop ?n (or use ?n=1)."),
    ("GET", "/x?queue&n=3",
     "[ERROR] ?queue cannot be used with ?n=3: a queue gives each message to one receiver."
     " Drop ?n (or use ?n=1)."),
    ("PUT", "/x?live&n=2",
     "[ERROR] ?live cannot be used with ?n: a live stream takes any number of receivers."),
    ("GET", "/x?live&n=1",
     "[ERROR] ?live cannot be used with ?n: a live stream takes any number of receivers."),
    ("PUT", "/x?live&queue",
     "[ERROR] ?live cannot be used with ?queue: a path is either a queue or a live stream."),
    ("GET", "/x?live=yes", '[ERROR] Invalid query parameter "live": use ?live or ?live=line'),
    ("PUT", "/x?queue=1", '[ERROR] Invalid query parameter "queue": use ?queue, with no value'),
]


@pytest.mark.parametrize("method,path,text", CONFLICTS)
@pytest_twisted.inlineCallbacks
def test_mode_conflicts_are_400s_with_their_text(server, method, path, text):
    reply = yield helpers.http(method, server.url(path), data=b"x" if method == "PUT" else None)
    assert (reply.code, reply.body) == (400, (text + "\n").encode())
    assert reply.one("content-type") == "text/plain"
    assert reply.one("access-control-allow-origin") == "*"


@pytest_twisted.inlineCallbacks
def test_the_400s_users_hit_today_name_the_way_out(server, procs):
    receiver = procs.spawn(curl(server.url("/busy")))
    yield server.wait_receivers("/busy", 1)
    reply = yield helpers.http("GET", server.url("/busy"))
    assert reply.code == 400
    assert reply.body.decode().splitlines() == [
        "[ERROR] The number of receivers has reached limits.",
        "To share messages among receivers add ?queue on every side, to join a running"
        " stream add ?live, or for K receivers of every byte use ?n=K.",
    ]
    sender = procs.spawn(curl("-T", "/dev/null", server.url("/busy2")))
    yield server.wait_sender("/busy2")
    reply = yield helpers.http("PUT", server.url("/busy2"), data=b"x")
    assert reply.body.decode().splitlines() == [
        "[ERROR] Another sender has been connected on '/busy2'.",
        errors.SECOND_SENDER_HINT,
    ]
    assert "?queue" in errors.SECOND_SENDER_HINT and "?live" in errors.SECOND_SENDER_HINT
    # A live party on a plain pipe, a queue party on a live stream.
    reply = yield helpers.http("GET", server.url("/busy?live"))
    assert reply.body.decode().splitlines()[0] == (
        "[ERROR] '/busy' is a plain pipe now: a party with ?live cannot join it."
    )
    receiver.kill()
    sender.kill()


# ------------------------------------------------------------------ ?live

LINES = (
    # Numbered lines, a few thousand a second, for $1 lines.
    'i=0; while [ $i -lt "$1" ]; do echo "line $i of the stream"; i=$((i+1));'
    ' if [ $((i % 20)) = 0 ]; then sleep 0.01; fi; done'
)
LINE = re.compile(r"line (\d+) of the stream")


def numbers(text: str) -> List[int]:
    """The numbers of the whole lines of ``text``; every line must be one."""
    lines = text.split("\n")
    assert lines[-1] == "" or LINE.fullmatch(lines[-1]) is None or True
    whole = lines[:-1]
    found = []
    for line in whole:
        match = LINE.fullmatch(line)
        assert match is not None, f"not a whole line: {line!r}"
        found.append(int(match.group(1)))
    return found


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "h2c"])
@pytest_twisted.inlineCallbacks
def test_live_readers_join_and_leave_and_get_whole_lines_from_when_they_joined(
    make_server, procs, http2
):
    server = make_server()
    h2 = ["--http2-prior-knowledge"] if http2 else []
    total = 3000
    first = procs.spawn(curl(*h2, "-f", server.url("/log?live")), name="first")
    yield server.wait_receivers("/log", 1)
    producer, sender = procs.pipeline(
        ["sh", "-c", LINES, "lines", str(total)],
        curl("-f", "-T", "-", server.url("/log?live=line")),
    )
    joiners = []
    for index in range(6):
        yield sleep(random.uniform(0.05, 0.25))
        seen = len(numbers(first.text))
        joiner = procs.spawn(curl(*h2, "-f", server.url("/log?live")), name=f"j{index}")
        joiners.append((joiner, seen, index % 2 == 0))
    for joiner, _, leaves in joiners:
        if leaves:
            yield sleep(random.uniform(0.05, 0.2))
            joiner.kill()
    yield sender.wait(timeout=60)
    assert sender.exit_code == 0, sender.describe()
    yield first.wait(timeout=10)
    assert first.exit_code == 0, first.describe()
    assert numbers(first.text) == list(range(total))
    for joiner, seen, leaves in joiners:
        yield joiner.wait(timeout=10)
        got = numbers(joiner.text)
        if not leaves:
            assert joiner.exit_code == 0, joiner.describe()
            assert got and got[-1] == total - 1
        if got:
            # A contiguous run of the stream, none of it from before the join.
            assert got == list(range(got[0], got[0] + len(got)))
            assert got[0] >= seen, (got[0], seen)
    lines = sender.lines()
    assert lines[0] == "[INFO] Streaming live: receivers may join at any time."
    assert lines[1] == "[INFO] A receiver joined (1 now)."
    joined = [line for line in lines if line.startswith("[INFO] A receiver joined")]
    left = [line for line in lines if line.startswith("[INFO] A receiver left")]
    assert len(joined) == 7 and len(left) <= 3
    assert lines[-2:] == [
        "[INFO] Sent successfully!",
        f"[INFO] {7 - len(left)} receiver(s) got the end of the stream.",
    ]


@pytest_twisted.inlineCallbacks
def test_the_live_sender_dying_truncates_every_reader(make_server, procs):
    server = make_server()
    readers = [procs.spawn(curl("-f", server.url("/die?live"))) for _ in range(2)]
    yield server.wait_receivers("/die", 2)
    producer, sender = procs.pipeline(
        ["sh", "-c", LINES, "lines", "1000000"],
        curl("-f", "-T", "-", server.url("/die?live")),
    )
    h2reader = procs.spawn(curl("--http2-prior-knowledge", "-f", server.url("/die?live")))
    yield server.wait_receivers("/die", 3)
    yield wait_for(lambda: h2reader.nbytes > 1000, 10)
    sender.kill()
    for reader in readers:
        yield reader.wait(timeout=15)
        assert reader.exit_code == CURL_PARTIAL_FILE, reader.describe()
    yield h2reader.wait(timeout=15)
    assert h2reader.exit_code in (16, 92), h2reader.describe()  # HTTP/2 stream reset
    producer.kill()


def deaf_reader(port: int, path: str) -> socket.socket:
    """A GET that never reads, with a small receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


@pytest_twisted.inlineCallbacks
def test_a_stuck_live_reader_is_cut_and_the_others_and_a_joiner_go_on(
    make_server, procs, tmp_path
):
    server = make_server("--stall-timeout", "1")
    data = tmp_path / "data"
    digest = helpers.make_file(str(data), 24 * 1024 * 1024, seed=3)
    whole = procs.spawn(curl("-f", "-o", str(tmp_path / "whole"), server.url("/s?live")))
    stuck = deaf_reader(server.portnum, "/s?live")
    yield server.wait_receivers("/s", 2)
    sender = procs.spawn(curl("-f", "-T", str(data), server.url("/s?live")))
    yield wait_for(
        lambda: (p := server.pipe("/s")) is not None and p.bytes > 0, 10, what="bytes flowing"
    )
    joiner = procs.spawn(curl("-f", "-o", str(tmp_path / "joiner"), server.url("/s?live")))
    for proc in (sender, whole, joiner):
        yield proc.wait(timeout=60)
        assert proc.exit_code == 0, proc.describe()
    assert helpers.file_sha256(str(tmp_path / "whole")) == digest
    tail = (tmp_path / "joiner").read_bytes()
    assert tail and data.read_bytes().endswith(tail)
    lines = sender.lines()
    assert "[INFO] A receiver was cut: it took no bytes for 1 seconds." in lines
    assert lines[-1] == "[INFO] 2 receiver(s) got the end of the stream."
    stuck.close()


@pytest_twisted.inlineCallbacks
def test_a_live_reader_that_never_reads_holds_the_stream_not_memory(make_server, procs, tmp_path):
    # Never cut (--stall-timeout 0): the stream waits for it, and the server
    # holds no more than a read per reader meanwhile.
    server = make_server("--stall-timeout", "0")
    data = tmp_path / "data"
    helpers.make_file(str(data), 64 * 1024 * 1024, seed=4)
    stuck = deaf_reader(server.portnum, "/m?live")
    reader = procs.spawn(curl("-f", "-o", os.devnull, server.url("/m?live")))
    yield server.wait_receivers("/m", 2)
    sender = procs.spawn(curl("-f", "-T", str(data), server.url("/m?live")))
    yield sleep(2.0)
    pipe = server.pipe("/m")
    moved = pipe.bytes
    yield sleep(1.0)
    assert pipe.bytes == moved and moved < 32 * 1024 * 1024  # paced by the stuck one
    assert pipe.bytesHeld() < 1024 * 1024, pipe.bytesHeld()
    stuck.close()  # it leaves: the stream goes on to the other
    yield sender.wait(timeout=60)
    assert sender.exit_code == 0, sender.describe()
    yield reader.wait(timeout=10)
    assert reader.exit_code == 0


@pytest.mark.parametrize("kind", hangup.READERS)
@pytest_twisted.inlineCallbacks
def test_a_live_reader_that_hangs_up_while_the_stream_is_quiet_is_seen(
    make_server, procs, h2clients, kind
):
    # A log tail quiet for minutes: nothing is written to its readers, so
    # only their connection says one left. The count, the metrics and the
    # no-reader deadline all hang on it.
    server = make_server()
    reader = yield hangup.reader(kind, server, procs, h2clients, "/quiet?live")
    yield server.wait_receivers("/quiet", 1)
    sender = yield hangup.quiet_sender(server.portnum, "/quiet?live", b"first line\n")
    yield wait_for(lambda: reader.got().endswith(b"first line\n"), 10, what="the first line")
    yield wait_for(lambda: hangup.said(sender, "[INFO] A receiver joined (1 now)."), 10)
    reader.hang_up()
    yield wait_for(
        lambda: hangup.said(sender, "[INFO] A receiver left (0 now)."), 5, what="the leave"
    )
    assert server.pipe("/quiet").receivers == []
    # The stream waits for the next reader, which gets what comes from now.
    late = procs.spawn(curl("-f", server.url("/quiet?live")), name="late")
    yield server.wait_receivers("/quiet", 1)
    yield wait_for(lambda: hangup.lines(sender).count("[INFO] A receiver joined (1 now).") == 2, 10)
    sender.send(chunk(b"second line\n") + chunk(b""))
    yield late.wait(timeout=10)
    assert late.exit_code == 0, late.describe()
    assert late.text == "second line\n"
    yield wait_for(lambda: sender.response().complete, 10, what="the sender's response")
    assert hangup.lines(sender) == [
        "[INFO] Streaming live: receivers may join at any time.",
        "[INFO] A receiver joined (1 now).",
        "[INFO] A receiver left (0 now).",
        "[INFO] A receiver joined (1 now).",
        "[INFO] Sent successfully!",
        "[INFO] 1 receiver(s) got the end of the stream.",
    ]
    sender.close()


@pytest_twisted.inlineCallbacks
def test_a_live_sender_with_no_reader_gets_its_line(make_server, procs):
    server = make_server("--wait-timeout", "1")
    producer, sender = procs.pipeline(
        ["sh", "-c", LINES, "lines", "100000000"],
        curl("-f", "-T", "-", server.url("/alone?live")),
    )
    yield sender.wait(timeout=20)
    assert sender.exit_code != 0
    assert sender.lines() == [
        "[INFO] Streaming live: receivers may join at any time.",
        "[ERROR] No receiver on '/alone' within 1 seconds.",
    ]
    producer.kill()


@pytest_twisted.inlineCallbacks
def test_the_access_line_names_the_mode(make_server, procs, tmp_path):
    from twisted.logger import globalLogPublisher

    seen: List[str] = []

    def observe(event):
        if event.get("log_namespace") == "pipeserver.access":
            seen.append(event["log_format"].format(**event))

    globalLogPublisher.addObserver(observe)
    try:
        server = make_server()
        receiver = procs.spawn(curl("-fsS", server.url("/a?queue")))
        yield wait_for(lambda: queue_waiting(server, "/a") == (0, 1), 10)
        sender = procs.spawn(curl("-fsS", "-d", "hi", server.url("/a")))
        for proc in (receiver, sender):
            yield proc.wait(timeout=10)
        yield wait_for(lambda: len(seen) >= 2, 5)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert any(t.startswith("GET /a 200 ok ") and t.endswith(" mode=queue project=-") for t in seen)
    assert any(t.startswith("POST /a 200 ok ") and t.endswith(" mode=queue project=-") for t in seen)


def quiet(pipe, total: int) -> bool:
    """Whether ``pipe`` passed on all ``total`` bytes and holds none for
    its readers: nothing is being written to them."""
    return pipe.bytes == total and all(download.held() == 0 for download in pipe.receivers)


@pytest_twisted.inlineCallbacks
def test_metrics_show_queue_depth_live_joins_leaves_and_stall_cuts(make_server, procs):
    from prometheus_client.parser import text_string_to_metric_families

    from pipeserver.ops.metrics import makeMetricsSite

    server = make_server("--stall-timeout", "1", "--metrics-listen", "tcp:0")
    port = reactor.listenTCP(0, makeMetricsSite(server.site.metrics), interface="127.0.0.1")

    @pytest_twisted.inlineCallbacks
    def scrape():
        reply = yield helpers.http("GET", f"http://127.0.0.1:{port.getHost().port}/metrics")
        samples = {}
        for family in text_string_to_metric_families(reply.body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    try:
        before = yield scrape()
        assert before[("pipeserver_queue_waiting", (("project", ""), ("role", "receiver")))] == 0
        waiting = [procs.spawn(curl("-fsS", server.url("/m?queue"))) for _ in range(3)]
        yield wait_for(lambda: queue_waiting(server, "/m") == (0, 3), 10)
        during = yield scrape()
        assert during[("pipeserver_queue_waiting", (("project", ""), ("role", "receiver")))] == 3
        assert during[("pipeserver_queue_waiting", (("project", ""), ("role", "sender")))] == 0
        for proc in waiting:
            proc.kill()
        # A live stream: two readers, one of them stuck (cut), one leaves.
        stuck = deaf_reader(server.portnum, "/l?live")
        leaver = procs.spawn(curl("-f", "-o", os.devnull, server.url("/l?live")))
        yield server.wait_receivers("/l", 2)
        # 30 MB, then a quiet stream. Not from curl -T -: while its stdin is
        # quiet it reads none of its response (hangup_support), so when the
        # leaver had taken all 30 MB before it left, the line that says so
        # never showed (issue 18).
        sender = yield hangup.quiet_sender(server.portnum, "/l?live", b"\0" * 30_000_000)
        yield wait_for(lambda: b"[INFO] A receiver was cut" in sender.data, 20, what="the cut")
        # The leaver leaves a quiet stream: all passed on, nothing held for it.
        yield wait_for(lambda: quiet(server.pipe("/l"), 30_000_000), 20, what="a quiet stream")
        leaver.kill()
        yield wait_for(
            lambda: hangup.said(sender, "[INFO] A receiver left (0 now)."), 10, what="the leave"
        )
        after = yield scrape()
        events = {
            dict(labels)["event"]: v
            for (name, labels), v in after.items()
            if name == "pipeserver_receiver_events_total"
        }
        assert events == {"joined": 2.0, "left": 2.0, "cut_stalled": 1.0}
        assert after[("pipeserver_bytes_out_total", (("project", ""),))] > 0
        sender.reset()
        stuck.close()
        yield server.wait_empty(timeout=10)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_the_help_recipes_for_service_paths_work(make_server, procs, tmp_path):
    server = make_server()
    reply = yield helpers.http("GET", server.url("/help"))
    lines = reply.body.decode().splitlines()
    consumer = lines[lines.index("# Each replica of the consumer:") + 1]
    producer = lines[lines.index("# Each producer, one request per message:") + 1]
    assert consumer == f"while curl -fsS 'http://{server.host}/jobs?queue' | ./handle-job; do :; done"
    handler = tmp_path / "handle-job"
    handler.write_text('#!/bin/sh\ncat > "job.$$"\n')
    handler.chmod(0o755)
    loops = [spawn_group(procs, f"c{n}", f"cd {tmp_path} && {consumer}") for n in range(2)]
    yield wait_for(lambda: queue_waiting(server, "/jobs") == (0, 2), 10)
    for _ in range(3):
        sent = procs.spawn(["sh", "-c", producer], name="producer")
        yield sent.wait(timeout=20)
        assert sent.exit_code == 0, sent.describe()
    yield wait_for(lambda: queue_waiting(server, "/jobs") == (0, 2), 10)
    jobs = sorted(p.read_text() for p in tmp_path.glob("job.*") if p.stat().st_size)
    assert jobs == ['{"job": 42}\n'] * 3
    for loop in loops:
        loop.kill()
    # The live recipe: a reader, then the sender of a few lines.
    start = lines.index("======= Live stream (?live): readers join and leave, from now =======")
    send, read = lines[start + 1], lines[start + 2].split("   #")[0]
    reader = procs.spawn(["sh", "-c", read], name="reader")
    yield server.wait_receivers("/logs", 1)
    sender = procs.spawn(["sh", "-c", send.replace("./service 2>&1", "printf 'a\\nb\\n'")])
    for proc in (sender, reader):
        yield proc.wait(timeout=20)
        assert proc.exit_code == 0, proc.describe()
    assert reader.text == "a\nb\n"
