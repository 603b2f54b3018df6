"""Per-client limits over real sockets (SPEC §9): one client address cannot
take everyone's place. Clients bind to distinct loopback addresses
(127.0.0.2, 127.0.0.3, ...), which the server sees as distinct clients.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import pytest_twisted

from abuse_support import (
    FailureLog,
    assert_received,
    assert_sent,
    body_bytes,
    chunk,
    connect,
    exchange,
    get_request,
    normal_pair,
    put_request,
    raise_nofile,
)
from helpers import curl, wait_for
from test_abuse import assert_over_limit, wait_many
from test_endpoints import run_service, services  # noqa: F401  (fixture)

CLIENT_LIMIT = "[ERROR] Too many parties from your address are waiting or transferring."


@pytest.fixture
def failures():
    with FailureLog() as log:
        yield log
    assert log.events == [], log.describe()


@pytest_twisted.inlineCallbacks
def close_all(server, clients):
    for c in clients:
        c.close()
    for c in clients:
        yield c.wait_closed()
    yield server.wait_empty(timeout=10)


@pytest_twisted.inlineCallbacks
def test_one_address_with_1500_waiting_cannot_lock_out_another(make_server, failures):
    raise_nofile(1500 * 2 + 500)
    server = make_server()  # the defaults, derived from the fd limit
    waiting, rejected = yield wait_many(
        server, [f"/idle{i}" for i in range(1500)], source="127.0.0.2"
    )
    # Another address still waits, and pairs.
    yield normal_pair(server, path="/other", source="127.0.0.3")
    yield normal_pair(server, path="/other", source="127.0.0.3", chunked=True)
    limits = server.registry.limits
    per_client = limits.max_parties_per_client
    assert per_client < 1500 < limits.max_waiting
    assert len(waiting) == per_client and len(rejected) == 1500 - per_client
    for c in rejected:
        assert_over_limit(c, CLIENT_LIMIT)
    assert server.registry.partiesByClient == {"127.0.0.2": per_client}
    yield close_all(server, waiting + rejected)
    assert server.registry.partiesByClient == {}


@pytest_twisted.inlineCallbacks
def test_the_51st_party_of_one_address_gets_503_while_another_waits(make_server, failures):
    server = make_server("--max-waiting-per-client", "50", "--metrics-listen", "tcp:0")
    waiting, rejected = yield wait_many(
        server, [f"/w{i}" for i in range(50)], source="127.0.0.2"
    )
    assert len(waiting) == 50 and rejected == []
    # The 51st, a receiver or a sender, even one that would complete a pipe.
    for request in (get_request("/w51"), put_request("/w51", b"abc"), put_request("/w0", b"abc")):
        lonely = yield exchange(server.portnum, request, source="127.0.0.2")
        assert_over_limit(lonely, CLIENT_LIMIT)
        assert lonely.response().one("Retry-After") == "5"
    # Another address waits...
    receiver = yield connect(server.portnum, source="127.0.0.3")
    receiver.send(get_request("/mine"))
    yield server.wait_receivers("/mine", 1)
    assert server.registry.partiesByClient == {"127.0.0.2": 50, "127.0.0.3": 1}
    # ...and pairs (and completes a pipe of the capped address, too).
    body = body_bytes(50_000, 3)
    sender = yield connect(server.portnum, source="127.0.0.3")
    sender.send(put_request("/mine", body))
    yield receiver.wait_closed()
    yield sender.wait_closed()
    assert_received(receiver, body)
    assert_sent(sender)
    first = waiting[0]
    sender = yield exchange(server.portnum, put_request(first.path, body), source="127.0.0.3")
    assert_sent(sender)
    yield wait_for(lambda: first.response().complete, what="the first receiver")
    assert_received(first, body)
    # Its place is free again: one more from 127.0.0.2 waits.
    again = yield connect(server.portnum, source="127.0.0.2")
    again.send(get_request("/w-again"))
    yield server.wait_receivers("/w-again", 1)
    yield close_all(server, waiting + [again])
    assert server.registry.counts["rejected: client limit"] == 3
    # Counted in the rejection metric under a reason of its own.
    assert server.site.metrics.prometheus.get_sample_value(
        "pipeserver_rejections_total", {"project": "", "reason": "client_limit"}
    ) == 3


@pytest_twisted.inlineCallbacks
def test_transfers_under_way_count_against_the_client(make_server, failures):
    server = make_server("--max-waiting-per-client", "4")
    # Two transfers whose senders send 3 bytes and stop: four parties.
    pairs = []
    for i in range(2):
        receiver = yield connect(server.portnum, source="127.0.0.2")
        receiver.send(get_request(f"/trickle{i}"))
        yield server.wait_receivers(f"/trickle{i}", 1)
        sender = yield connect(server.portnum, source="127.0.0.2")
        sender.send(
            f"PUT /trickle{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunk(b"abc")
        )
        yield wait_for(lambda: b"\r\nabc\r\n" in receiver.data, what="the first bytes")
        pairs += [receiver, sender]
    assert server.registry.waiting() == 0
    assert server.registry.partiesByClient == {"127.0.0.2": 4}
    lonely = yield exchange(server.portnum, get_request("/more"), source="127.0.0.2")
    assert_over_limit(lonely, CLIENT_LIMIT)
    yield normal_pair(server, path="/free", source="127.0.0.3")
    yield close_all(server, pairs)
    assert server.registry.partiesByClient == {}


@pytest_twisted.inlineCallbacks
def test_trusted_proxy_reports_the_client_untrusted_peers_do_not(make_server, failures):
    server = make_server(
        "--max-waiting-per-client", "2", "--trusted-proxy", "127.0.0.5/32",
        "--trusted-proxy", "10.9.0.0/16",
    )

    def via(header: str):
        return f"{header}\r\n".encode()

    clients = []

    @pytest_twisted.inlineCallbacks
    def park(path, source, header):
        c = yield connect(server.portnum, source=source)
        c.send(get_request(path, extra=via(header)))
        yield wait_for(lambda: c.data or server.pipe(path), what=f"{path} to be taken")
        clients.append(c)
        return c

    # From the trusted proxy: bucketed by the client it reports (the
    # right-most address that is not a proxy of ours).
    yield park("/t1", "127.0.0.5", "X-Forwarded-For: 10.0.0.1")
    yield park("/t2", "127.0.0.5", "X-Forwarded-For: 6.6.6.6, 10.0.0.1, 10.9.1.1")
    third = yield park("/t3", "127.0.0.5", "X-Forwarded-For: 10.0.0.1")
    assert_over_limit(third, CLIENT_LIMIT)
    yield park("/t4", "127.0.0.5", "X-Forwarded-For: 10.0.0.2")
    yield park("/t5", "127.0.0.5", 'Forwarded: for="[2001:db8:cafe::17]:4711";proto=http')
    # Garbage from the trusted proxy counts against the proxy itself.
    yield park("/t6", "127.0.0.5", "X-Forwarded-For: not-an-address")
    # An untrusted peer cannot choose its bucket.
    yield park("/u1", "127.0.0.6", "X-Forwarded-For: 10.0.0.7")
    yield park("/u2", "127.0.0.6", "X-Forwarded-For: 10.0.0.8")
    refused = yield park("/u3", "127.0.0.6", "Forwarded: for=10.0.0.9")
    assert_over_limit(refused, CLIENT_LIMIT)
    assert server.registry.partiesByClient == {
        "10.0.0.1": 2,
        "10.0.0.2": 1,
        "2001:db8:cafe::/64": 1,
        "127.0.0.5": 1,
        "127.0.0.6": 2,
    }
    yield close_all(server, clients)


@pytest_twisted.inlineCallbacks
def test_a_proxy_on_a_unix_socket_names_its_clients(procs, services, tmp_path):
    directory = tempfile.mkdtemp(prefix="pipe-", dir="/tmp")
    try:
        sock = os.path.join(directory, "p.sock")
        svc, _ = yield run_service(
            services, "--listen", f"unix:{sock}", "--trusted-proxy", "unix",
            "--max-waiting-per-client", "1",
        )
        registry = svc.site.registry

        def get(path, client):
            return procs.spawn(curl("-D", "-", "--unix-socket", sock, "-H",
                                    f"X-Forwarded-For: {client}", "http://pipe" + path))

        first = get("/a", "192.0.2.1")
        yield wait_for(lambda: registry.partiesByClient == {"192.0.2.1": 1})
        refused = get("/b", "192.0.2.1")
        yield refused.wait()
        assert refused.out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused.describe()
        assert refused.out.endswith(("\r\n\r\n" + CLIENT_LIMIT + "\n").encode())
        other = get("/c", "192.0.2.2")
        yield wait_for(lambda: registry.partiesByClient == {"192.0.2.1": 1, "192.0.2.2": 1})
        for proc in (first, other):
            proc.kill()
            yield proc.wait()
        yield wait_for(lambda: not registry.pipes)
        yield svc.stopService()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
