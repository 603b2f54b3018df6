"""The site's connections by client (pipeserver/http/connections.py): the cap on
connections per client, the tab of response bytes queued for each, and a
pipelining client answered only as fast as it takes the answers (unit, on a
Clock; the same over real sockets: tests/test_abuse.py, test_integration_limits.py)."""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.internet.address import IPv4Address, UNIXAddress

from pipeserver.http.connections import Connections, Tab
from unit_support import Env, env, make_site, request  # noqa: F401  (fixtures)


def peer(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


def by_host(address: Optional[object]) -> Tuple[str, bool]:
    host = getattr(address, "host", "unix")
    return host, host == "10.0.0.1"  # 10.0.0.1: a trusted proxy


def ledger(cap: Optional[int] = 2, budget: Optional[int] = 100) -> Connections:
    return Connections(cap, budget, by_host)


def admitted(connections: Connections, host: str) -> Tab:
    tab = connections.admit(peer(host))
    assert tab is not None
    return tab


def test_a_client_holds_at_most_its_cap_others_are_not_held_back() -> None:
    connections = ledger(cap=2)
    first, second = admitted(connections, "192.0.2.1"), admitted(connections, "192.0.2.1")
    assert connections.admit(peer("192.0.2.1")) is None
    assert connections.connectionsOf("192.0.2.1") == 2
    admitted(connections, "192.0.2.2")
    first.close()
    first.close()  # once only
    third = admitted(connections, "192.0.2.1")
    assert connections.connectionsOf("192.0.2.1") == 2
    for tab in (second, third):
        tab.close()
    assert "192.0.2.1" not in connections.accounts


def test_a_trusted_proxy_is_counted_never_capped_nor_budgeted() -> None:
    connections = ledger(cap=1, budget=10)
    tabs = [admitted(connections, "10.0.0.1") for _ in range(5)]
    assert connections.connectionsOf("10.0.0.1") == 5
    tabs[0].queued(1000)
    assert not tabs[1].over


def test_no_cap_no_budget() -> None:
    connections = ledger(cap=None, budget=None)
    tabs = [admitted(connections, "192.0.2.1") for _ in range(50)]
    tabs[0].queued(1 << 30)
    assert not tabs[1].over


def test_queued_bytes_are_the_clients_and_closing_frees_them() -> None:
    connections = ledger(budget=100)
    one, two = admitted(connections, "192.0.2.1"), admitted(connections, "192.0.2.1")
    one.queued(60)
    two.queued(40)
    assert connections.queuedFor("192.0.2.1") == 100 and not one.over  # at it is not past it
    two.queued(1)
    assert one.over and two.over
    one.close()  # its 60 bytes go with it
    assert connections.queuedFor("192.0.2.1") == 41 and not two.over
    one.queued(1000)  # a closed tab counts nothing more
    assert connections.queuedFor("192.0.2.1") == 41


def test_waiters_are_woken_in_order_one_at_a_time_while_under() -> None:
    connections = ledger(cap=None, budget=100)
    stalled = admitted(connections, "192.0.2.1")
    stalled.queued(150)
    woken: List[str] = []
    tabs = {name: admitted(connections, "192.0.2.1") for name in "abcd"}

    def wake(name: str, spends: int) -> None:
        woken.append(name)
        tabs[name].queued(spends)

    tabs["a"].whenUnder(lambda: wake("a", 30))
    tabs["b"].whenUnder(lambda: wake("b", 30))
    tabs["c"].whenUnder(lambda: wake("c", 0))
    tabs["d"].whenUnder(lambda: wake("d", 0))
    tabs["c"].close()  # gone: its waiter is never called
    assert woken == []
    stalled.queued(-100)  # 50: a (80) and b (110, past it) go, d waits again
    assert woken == ["a", "b"]
    tabs["a"].queued(-30)
    assert woken == ["a", "b", "d"]
    tabs["b"].whenUnder(lambda: woken.append("now"))  # under: at once
    assert woken[-1] == "now"


def test_a_tab_handed_over_follows_the_connection() -> None:
    """PipeChannel.leave hands its tab over; the HTTP/2 channel that takes
    the same transport (``add``) has it, and its ``discard`` frees it."""

    class Proto:
        def __init__(self, transport: object) -> None:
            self.transport = transport

    connections = ledger(cap=1)
    transport = object()
    old, new = Proto(transport), Proto(transport)
    tab = admitted(connections, "192.0.2.1")
    connections.opened(old, tab)
    connections.handOver(old)
    assert old not in connections and connections.connectionsOf("192.0.2.1") == 1
    connections.add(new)
    assert list(connections) == [new] and connections.tabOf(new) is tab
    assert connections.admit(peer("192.0.2.1")) is None  # still counted
    connections.discard(new)
    assert list(connections) == [] and connections.accounts == {}
    # A protocol nobody admitted is drained, never counted.
    stray = Proto(object())
    connections.add(stray)
    connections.tabOf(stray).queued(10)
    connections.discard(stray)
    assert connections.accounts == {}


def test_unix_peers_are_one_client() -> None:
    connections = ledger(cap=1)
    assert connections.admit(UNIXAddress(None)) is not None
    assert connections.admit(UNIXAddress(None)) is None


# ------------------------------------------------------------ pipelining, on a Clock


def test_pipelined_requests_wait_while_the_answers_are_not_taken(env: Env) -> None:
    """Issue 22 item 8: while the transport's buffer is full, a request's
    answer ends and the next pipelined one is neither parsed nor answered,
    nor is the connection read; once it drains, they are, in order."""
    c = env.client()
    c.pause()  # our write buffer is full: the client does not read
    c.send(request(b"GET", b"/version") * 3)
    assert len(c.responses()) == 1
    assert c.reading == "paused" and "backlog" in c.proto.gate.holds
    c.send(request(b"GET", b"/version"))  # bytes that came just after: kept
    assert len(c.responses()) == 1
    c.resume()
    assert [r.status for r in c.responses()] == [200] * 4
    assert c.reading == "producing" and c.proto.gate.holds == frozenset()
    c.disconnect()
