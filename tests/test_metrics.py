# mypy: disable-error-code="arg-type,attr-defined,union-attr"
"""``--metrics-listen``: Prometheus metrics scraped during and after transfers."""

from __future__ import annotations

import hashlib
import socket
from typing import Dict, FrozenSet, Tuple

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, threads

import helpers
from helpers import curl
from pipeserver.ops import tap
from pipeserver.ops.metrics import makeMetricsSite

Sample = Tuple[str, FrozenSet[Tuple[str, str]]]
SUCCESS = "[INFO] All receiver(s) was/were received successfully."
TOKEN = "metrics-test-token-alpha"
#: The labels of an open server's series.
OPEN = frozenset({("project", "")})


@pytest.fixture
def metrics_of():
    ports = []

    def listen(server: helpers.Server) -> str:
        port = reactor.listenTCP(0, makeMetricsSite(server.site.metrics), interface="127.0.0.1")
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}/metrics"

    yield listen
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest_twisted.inlineCallbacks
def scrape(url: str):
    reply = yield helpers.http("GET", url)
    assert reply.code == 200
    assert reply.one("content-type").startswith("text/plain; version=")
    samples: Dict[Sample, float] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples, name: str):
    return {labels: v for (n, labels), v in samples.items() if n == name}


class StillClock:
    """The reactor, except that its time stands still until ``advance``."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self.now = reactor.seconds()

    def seconds(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(self._reactor, name)


@pytest_twisted.inlineCallbacks
def test_metrics_during_and_after_a_transfer(make_server, metrics_of, procs, tmp_path):
    server = make_server("--metrics-listen", "tcp:0", "--wait-timeout", "3")
    url = metrics_of(server)
    before = yield scrape(url)
    assert series(before, "pipeserver_pipes_established_total") == {}
    # The gauges say 0, rather than nothing, when nothing waits or streams.
    assert series(before, "pipeserver_parties_waiting") == {OPEN: 0}
    assert series(before, "pipeserver_pipes_streaming") == {OPEN: 0}
    # prometheus_client's own: what bounded memory and fds are measured by.
    assert value(before, "process_resident_memory_bytes") > 0
    assert value(before, "process_open_fds") > 0
    assert value(before, "process_max_fds") > 0

    # Two rejections with their reasons.
    assert (yield helpers.http("DELETE", server.url("/m"))).code == 405
    assert (yield helpers.http("GET", server.url("/m?n=0"))).code == 400

    first, rest = tmp_path / "first", tmp_path / "rest"
    helpers.make_file(str(first), 200_000, seed=1)
    helpers.make_file(str(rest), 300_000, seed=2)
    expected = hashlib.sha256(first.read_bytes() + rest.read_bytes()).hexdigest()
    gate = str(tmp_path / "gate")

    # Waits are measured on the site's clock (requests' start) and the
    # metrics' (the pipe's establishment): both stand still here, except
    # when the test moves them, so every wait below is known exactly.
    clock = StillClock(reactor)
    server.site.reactor = server.site.metrics.clock = clock

    early = procs.spawn(curl("-f", server.url("/m?n=2")), name="early receiver")
    yield server.wait_receivers("/m", 1)
    waiting = yield scrape(url)
    assert value(waiting, "pipeserver_parties_waiting", project="") == 1
    assert series(waiting, "pipeserver_pipes_streaming") == {OPEN: 0}
    clock.advance(0.75)  # the early receiver waits 0.75 s; the others none

    late = procs.spawn(curl("-f", server.url("/m?n=2")), name="late receiver")
    yield server.wait_receivers("/m", 2)
    assert value((yield scrape(url)), "pipeserver_parties_waiting", project="") == 2
    _, sender = procs.pipeline(
        helpers.gated(str(first), gate, str(rest)), curl("-f", "-T", "-", server.url("/m?n=2"))
    )
    yield helpers.has_received(early, 200_000)
    yield helpers.has_received(late, 200_000)

    during = yield scrape(url)
    assert value(during, "pipeserver_parties_waiting", project="") == 0
    assert value(during, "pipeserver_pipes_streaming", project="") == 1
    assert value(during, "pipeserver_pipes_established_total", project="") == 1
    assert series(during, "pipeserver_pipes_closed_total") == {}
    # Bytes count as they move: the first part is through, the rest held
    # back by the gate.
    assert series(during, "pipeserver_bytes_in_total") == {OPEN: 200_000}
    assert series(during, "pipeserver_bytes_out_total") == {OPEN: 400_000}
    receivers = dict(project="", role="receiver")
    senders = dict(project="", role="sender")
    assert value(during, "pipeserver_wait_seconds_count", **receivers) == 2
    assert value(during, "pipeserver_wait_seconds_count", **senders) == 1
    # The early receiver waited 0.75 s, the late one and the sender (who
    # completed the pipe) not at all.
    assert value(during, "pipeserver_wait_seconds_bucket", le="0.5", **receivers) == 1
    assert value(during, "pipeserver_wait_seconds_bucket", le="1.0", **receivers) == 2
    assert value(during, "pipeserver_wait_seconds_sum", **receivers) == 0.75
    assert value(during, "pipeserver_wait_seconds_bucket", le="0.01", **senders) == 1
    assert value(during, "pipeserver_wait_seconds_sum", **senders) == 0.0

    helpers.open_gate(gate)
    for proc in (early, late, sender):
        yield proc.wait()
        assert proc.exit_code == 0, proc.describe()
    assert early.sha256 == late.sha256 == expected
    assert sender.lines()[-1] == SUCCESS
    yield server.wait_empty()

    # A receiver nobody sends to: released by the deadline.
    lonely = procs.spawn(curl(server.url("/lonely")), name="lonely")
    yield server.wait_receivers("/lonely", 1)
    yield lonely.wait(timeout=10)

    after = yield scrape(url)
    assert series(after, "pipeserver_parties_waiting") == {OPEN: 0}
    assert series(after, "pipeserver_pipes_streaming") == {OPEN: 0}
    assert value(after, "pipeserver_pipes_established_total", project="") == 1
    assert series(after, "pipeserver_pipes_closed_total") == {
        frozenset({("project", ""), ("outcome", "completed")}): 1,
        frozenset({("project", ""), ("outcome", "timed_out")}): 1,
    }
    assert value(after, "pipeserver_bytes_in_total", project="") == 500_000
    assert value(after, "pipeserver_bytes_out_total", project="") == 1_000_000
    assert value(after, "pipeserver_wait_seconds_count", **receivers) == 2
    assert series(after, "pipeserver_rejections_total") == {
        frozenset({("project", ""), ("reason", "method_not_allowed")}): 1,
        frozenset({("project", ""), ("reason", "n_not_positive")}): 1,
    }


@pytest_twisted.inlineCallbacks
def test_metrics_are_labelled_per_project_and_count_aborts(
    make_server, metrics_of, procs, tmp_path
):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alpha {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    server = make_server("--metrics-listen", "tcp:0", "--tokens", str(tokens))
    url = metrics_of(server)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    assert (yield helpers.http("GET", server.url("/a"))).code == 401
    alpha = frozenset({("project", "alpha")})
    before = yield scrape(url)
    # Every project of the tokens file has its zero samples.
    assert series(before, "pipeserver_parties_waiting") == {alpha: 0}
    assert series(before, "pipeserver_pipes_streaming") == {alpha: 0}

    # A sender first, with a length; its receiver stalls, then resets.
    body = tmp_path / "body"
    size = 16 * 1024 * 1024
    helpers.make_file(str(body), size, seed=3)
    sender = procs.spawn(
        curl("-H", f"Authorization: Bearer {TOKEN}", "-T", str(body), server.url("/a")),
        name="sender",
    )
    yield server.wait_sender("/a")
    # A receiver asking for a different n is turned away, inside the project.
    assert (yield helpers.http("GET", server.url("/a?n=2"), headers=auth)).code == 400
    stalled = socket.create_connection(("127.0.0.1", server.portnum))
    stalled.sendall(
        f"GET /a HTTP/1.1\r\nHost: {server.host}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    yield helpers.wait_for(
        lambda: (p := server.pipe("/a")) is not None and p.bytes > 0, what="bytes to flow"
    )
    during = yield scrape(url)
    assert series(during, "pipeserver_pipes_streaming") == {alpha: 1}
    helpers.reset_close(stalled)
    yield sender.wait()
    assert sender.exit_code != 0, sender.describe()
    yield server.wait_empty()

    after = yield scrape(url)
    assert series(after, "pipeserver_pipes_established_total") == {alpha: 1}
    assert series(after, "pipeserver_pipes_closed_total") == {
        frozenset({("project", "alpha"), ("outcome", "aborted")}): 1
    }
    assert series(after, "pipeserver_rejections_total") == {
        frozenset({("project", ""), ("reason", "unauthorized")}): 1,
        frozenset({("project", "alpha"), ("reason", "n_mismatch")}): 1,
    }
    # What the pipe took in and handed out before the receiver left: the
    # same for a single receiver, and less than the body.
    got_in = value(after, "pipeserver_bytes_in_total", project="alpha")
    got_out = value(after, "pipeserver_bytes_out_total", project="alpha")
    assert got_in == got_out
    assert 0 < got_out < size


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while True:
            more = sock.recv(65536)
            if not more:
                return reply
            reply += more


@pytest_twisted.inlineCallbacks
def test_requests_refused_before_routing_are_counted(make_server, metrics_of):
    server = make_server("--metrics-listen", "tcp:0", "--header-timeout", "1")
    url = metrics_of(server)
    port = server.portnum
    cases = [
        (b"GET /x HTTP/1.1\nHost: x\n\n", b"HTTP/1.1 400 "),
        (b"NOT A REQUEST LINE AT ALL\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /x HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
        (b"GET /x HTTP/1.1\r\nHost: x\r\n", b"HTTP/1.1 408 "),
    ]
    for data, status in cases:
        reply = yield threads.deferToThread(_exchange, port, data)
        assert reply.startswith(status), reply
    after = yield scrape(url)
    assert series(after, "pipeserver_rejections_total") == {
        frozenset({("project", ""), ("reason", "malformed")}): 2,
        frozenset({("project", ""), ("reason", "headers_too_large")}): 1,
        frozenset({("project", ""), ("reason", "header_timeout")}): 1,
    }


def test_no_metrics_without_the_option():
    options = tap.Options()
    options.parseOptions([])
    site = tap.makeSite(options, reactor)
    assert site.metrics is None
    assert options["metrics-listen"] == []


def test_servers_do_not_share_metrics():
    options = tap.Options()
    options.parseOptions(["--metrics-listen", "tcp:0"])
    one, two = tap.makeSite(options, reactor), tap.makeSite(options, reactor)
    one.metrics.rejected("", "unauthorized")
    assert b'reason="unauthorized"' in one.metrics.render()
    assert b'reason="unauthorized"' not in two.metrics.render()


@pytest_twisted.inlineCallbacks
def test_metrics_responses_name_no_version(make_server, metrics_of):
    server = make_server("--metrics-listen", "tcp:0:interface=127.0.0.1")
    reply = yield helpers.http("GET", metrics_of(server))
    assert reply.code == 200
    assert reply.one("Server") == "pipeserver"
    assert reply.one("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize(
    "head,status,text",
    [
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n",
         "405 Method Not Allowed", "[ERROR] Unsupported method: POST."),
        (b"PUT /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
         "405 Method Not Allowed", "[ERROR] Unsupported method: PUT."),
        (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
         "405 Method Not Allowed", "[ERROR] Unsupported method: DELETE."),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
         "413 Request Entity Too Large", "[ERROR] The metrics endpoint takes no request body."),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
         "413 Request Entity Too Large", "[ERROR] The metrics endpoint takes no request body."),
    ],
    ids=["post-200MiB", "put-chunked", "delete", "get-with-length", "get-chunked"],
)
@pytest_twisted.inlineCallbacks
def test_the_metrics_listener_reads_no_body(make_server, metrics_of, head, status, text):
    """Issue 22 item 14: stock twisted.web spooled any body, any size, to a
    temporary file before its 405. Now a method other than GET/HEAD, or a
    request with a body, is answered at its head, the body unread (it never
    comes here), no file is opened, and the connection closes."""
    from abuse_support import connect

    server = make_server("--metrics-listen", "tcp:0")
    url = metrics_of(server)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    files = helpers.open_files_for_writing()
    client = yield connect(port)
    client.send(head)
    yield client.wait_closed(5, "the metrics listener to answer the head and close")
    response = client.response()
    assert response.status_line == "HTTP/1.1 " + status
    assert response.complete and response.body == (text + "\n").encode()
    assert response.one("Connection") == "close"
    if response.status == 405:
        assert response.one("Allow") == "GET, HEAD"
    assert helpers.open_files_for_writing() == files
    yield scrape(url)  # a scrape still works (200, the exposition)
