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
from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.ssl import CertificateOptions

from abuse_support import (
    FailureLog,
    assert_received,
    assert_sent,
    body_bytes,
    chunk,
    connect,
    exchange,
    get_request,
    RawClient,
    normal_pair,
    put_request,
    raise_nofile,
    server_channel,
)
from h2_support import h2c, h2clients  # noqa: F401  (fixture)
from helpers import Server, curl, sha256, wait_for
from test_abuse import BIG_PAGE, assert_over_limit, settled, wait_answers, wait_many
from test_endpoints import run_service, self_signed, services  # noqa: F401  (fixture)

from pipeserver.http.fastpath import buffered_bytes

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
def test_one_address_with_1500_connections_cannot_lock_out_another(make_server, failures):
    """At the defaults (derived from the fd limit), one address opening 1,500
    connections, each asking to wait: 2 x 621 are kept, 621 of them wait and
    621 get the per-client 503; the other 258 are closed at once, unanswered,
    and counted. Another address still waits and pairs."""
    raise_nofile(1500 * 2 + 500)
    server = make_server("--metrics-listen", "tcp:0")
    limits = server.registry.limits
    per_client = limits.max_parties_per_client
    connections = limits.max_connections_per_client
    assert per_client < connections == 2 * per_client < 1500 < limits.max_waiting
    clients = []
    for start in range(0, 1500, 200):
        for i in range(start, min(start + 200, 1500)):
            c = yield connect(server.portnum, source="127.0.0.2")
            c.path = f"/idle{i}"
            c.send(get_request(c.path, close=False))
            clients.append(c)
        yield wait_for(
            lambda: all(c.data or c.is_closed or server.pipe(c.path) for c in clients),
            timeout=20, what="the server to take or refuse every connection",
        )
    refused = [c for c in clients if c.is_closed]
    rejected = [c for c in clients if c.data]
    waiting = [c for c in clients if server.pipe(c.path)]
    assert len(refused) == 1500 - connections and all(c.data == b"" for c in refused)
    assert len(waiting) == per_client and len(rejected) == connections - per_client
    for c in rejected:
        assert_over_limit(c, CLIENT_LIMIT)
    assert server.site.channels.connectionsOf("127.0.0.2") == connections
    # Another address still waits, and pairs.
    yield normal_pair(server, path="/other", source="127.0.0.3")
    yield normal_pair(server, path="/other", source="127.0.0.3", chunked=True)
    assert server.registry.partiesByClient == {"127.0.0.2": per_client}
    assert server.site.metrics.prometheus.get_sample_value(
        "pipeserver_rejections_total", {"project": "", "reason": "connection_limit"}
    ) == 1500 - connections
    yield close_all(server, waiting + rejected)
    assert server.registry.partiesByClient == {}
    yield wait_for(lambda: server.site.channels.accounts == {}, what="every connection to go")


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


# ---------------------------------------------------------------- connections


@pytest_twisted.inlineCallbacks
def test_connections_per_client_are_capped_over_http1_and_h2_alike(
        make_server, failures, h2clients):
    """One address holds at most --max-connections-per-client connections,
    counted as they are accepted, HTTP/1.1 and HTTP/2 alike; past it a new
    one is closed at once, unanswered, and counted. Its four work on, another
    address is not held back, and a closed one frees its place."""
    server = make_server("--max-connections-per-client", "4", "--metrics-listen", "tcp:0")
    channels = server.site.channels
    h1 = []
    for _ in range(2):
        c = yield connect(server.portnum)
        h1.append(c)
    h2 = []
    for _ in range(2):
        c = yield h2clients.h2c(server.portnum)
        h2.append(c)
    yield wait_for(lambda: channels.connectionsOf("127.0.0.1") == 4, what="four connections")
    # A fifth, either way, is closed unanswered: no HTTP/1.1 reply, no SETTINGS.
    fifth = yield connect(server.portnum)
    fifth.send(get_request("/version"))
    yield fifth.wait_closed(5, "the fifth connection to be closed")
    assert fifth.data == b""
    h2fifth = yield h2c(server.portnum, ready=False)
    h2clients.add(h2fifth)
    yield h2fifth.wait_closed(5, "the fifth h2 connection to be closed")
    assert h2fifth.remote_settings == {} and h2fifth.streams == {}
    assert channels.connectionsOf("127.0.0.1") == 4
    # The four work on: an h2 receiver and an HTTP/1.1 sender pair.
    body = body_bytes(300_000, 21)
    stream = h2[0].get("/cap")
    yield server.wait_receivers("/cap", 1)
    h1[0].send(put_request("/cap", body))
    yield stream.wait()
    yield h1[0].wait_closed()
    assert stream.status == 200 and stream.ended and stream.sha256 == sha256(body)
    assert_sent(h1[0])
    # Another address is not held back.
    yield normal_pair(server, path="/other", source="127.0.0.3")
    # A closed connection (an h2 one) frees its place.
    h2[1].close()
    yield h2[1].wait_closed()
    yield wait_for(lambda: channels.connectionsOf("127.0.0.1") == 2, what="two connections")
    again = yield exchange(server.portnum, get_request("/version"))
    assert again.response().status == 200
    assert server.site.metrics.prometheus.get_sample_value(
        "pipeserver_rejections_total", {"project": "", "reason": "connection_limit"}
    ) == 2
    for c in h1[1:] + h2[:1]:
        c.close()
        yield c.wait_closed()
    yield wait_for(lambda: channels.accounts == {}, what="every connection to go")


@pytest_twisted.inlineCallbacks
def test_a_trusted_proxys_connections_are_not_capped(make_server, failures):
    """A --trusted-proxy carries many clients: its connections are counted
    but not capped; any other address is."""
    server = make_server("--max-connections-per-client", "2", "--trusted-proxy", "127.0.0.5")
    channels = server.site.channels
    proxied = []
    for i in range(6):
        c = yield connect(server.portnum, source="127.0.0.5")
        c.send(get_request(f"/via{i}", close=False, extra=f"X-Forwarded-For: 10.0.0.{i}\r\n".encode()))
        proxied.append(c)
    yield wait_for(lambda: all(server.pipe(f"/via{i}") for i in range(6)), what="six waiting")
    assert channels.connectionsOf("127.0.0.5") == 6
    direct = []
    for _ in range(3):
        c = yield connect(server.portnum, source="127.0.0.6")
        direct.append(c)
    yield direct[2].wait_closed(5, "the third direct connection to be closed")
    assert direct[2].data == b"" and not direct[0].is_closed and not direct[1].is_closed
    yield close_all(server, proxied + direct[:2])


# ---------------------------------------------------------------- over TLS


@pytest_twisted.inlineCallbacks
def test_over_tls_the_cap_holds_and_a_deaf_pipeliner_is_bounded(procs, services, tmp_path):
    """Under TLS the connection past the cap is closed before its handshake,
    and a client that pipelines and reads nothing stalls once Twisted's
    buffer is full (64 KiB): the server holds one answer and one read."""
    key, cert = self_signed(str(tmp_path))
    svc, (tls,) = yield run_service(
        services, "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--max-connections-per-client", "2",
    )
    server = Server(svc.site, tls, svc.server)
    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", server.portnum,
                                  CertificateOptions(verify=False), timeout=10)
    reference = yield connectProtocol(endpoint, RawClient())
    reference.send(get_request(BIG_PAGE, close=False))
    yield wait_answers(reference, 1)
    page = reference.responses()[0]
    deaf = yield connectProtocol(endpoint, RawClient())
    deaf.transport.pauseProducing()
    deaf.send(get_request(BIG_PAGE, close=False) * 100)
    # A third connection of this address: closed unread, its handshake unfinished.
    third = yield connectProtocol(endpoint, RawClient())
    yield third.wait_closed(5, "the third TLS connection to be closed")
    assert third.data == b""
    channel = server_channel(server, deaf)
    yield settled(lambda: buffered_bytes(channel.transport.transport) + channel.unparsedBytes())
    held = buffered_bytes(channel.transport.transport) + channel.unparsedBytes()
    assert held < len(page.body) + 64 * 1024 + 256 * 1024, held
    deaf.transport.resumeProducing()
    yield wait_answers(deaf, 100)
    answers = deaf.responses()
    assert len(answers) == 100 and {sha256(r.body) for r in answers} == {sha256(page.body)}
    for client in (reference, deaf):
        client.close()
        yield client.wait_closed()
    yield wait_for(lambda: svc.site.channels.accounts == {}, what="every connection to go")
    yield svc.stopService()
