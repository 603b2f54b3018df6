"""A site's open connections, and what each client holds through them.

One client (an address, as ``clients.py`` names it) may hold at most
``maxPerClient`` connections, counted from the moment one is accepted, so
HTTP/1.1 and HTTP/2 alike (a connection turns to HTTP/2 only at its first
bytes), and past that it is refused before anything is read. Each
connection has a :class:`Tab` in its client's :class:`Account`, where the
protocols write down the response bytes the server holds for it because
its client does not take them (``Tab.queued``); a client whose queued bytes
pass ``maxQueuedPerClient`` is ``over``, and its connections start nothing
new until it is back under (``Tab.whenUnder``).

What a protocol does with it:

* ``PipeSite.buildProtocol`` asks :meth:`Connections.admit` for a tab (None:
  refuse); the ``PipeChannel`` it builds is :meth:`Connections.opened` with
  it, and ``discard``-ed when it goes, which closes the tab (its bytes and
  its place are freed, whatever it had written down).
* When a ``PipeChannel`` hands its transport to HTTP/2 (``leave``), it
  :meth:`Connections.handOver` its tab; the ``H2Channel`` that then
  ``add``-s itself on the same transport takes it, and its ``discard``
  closes it. So the count follows the connection, not the protocol.
* Where a connection's queued bytes change, one call: ``tab.queued(delta)``
  (``Connections.tabOf(protocol)`` gives an HTTP/2 channel its tab). Before
  it starts something new for its client: ``if tab.over:
  tab.whenUnder(resume)``.

A ``--trusted-proxy`` peer's connections carry many clients: they are
counted (under the proxy's address) but neither capped nor budgeted, since
one slow client behind the proxy must not hold back the others.

It is also what a shutdown drains (``site.channels``): iterating gives the
open connections' protocols.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, Optional, Tuple


#: Names a peer's client (its bucket) from its address (an ``IAddress``, or
#: None), and says whether it is a trusted proxy.
ClientOf = Callable[[object], Tuple[str, bool]]


def _peer_only(address: object) -> Tuple[str, bool]:
    return (str(getattr(address, "host", "unix")), False)


class Account:
    """What one client holds: its connections and the bytes queued for it."""

    __slots__ = ("client", "capped", "connections", "queuedBytes", "waiters")

    def __init__(self, client: str, capped: bool) -> None:
        self.client = client
        #: False for a trusted proxy: counted, never capped nor budgeted.
        self.capped = capped
        self.connections = 0
        self.queuedBytes = 0
        #: Who waits for the client to be back under its budget, in order.
        self.waiters: Deque[Tuple["Tab", Callable[[], None]]] = deque()


class Tab:
    """One connection's line in its client's :class:`Account`."""

    __slots__ = ("ledger", "account", "queuedBytes", "closed")

    def __init__(self, ledger: "Connections", account: Account) -> None:
        self.ledger = ledger
        self.account = account
        #: What this connection has written down (``queued``) and not taken back.
        self.queuedBytes = 0
        self.closed = False

    @property
    def client(self) -> str:
        return self.account.client

    def queued(self, delta: int) -> None:
        """The server holds ``delta`` more (or, negative, fewer) bytes of
        responses for this connection's client."""
        if self.closed or not delta:
            return
        self.queuedBytes += delta
        self.ledger._queued(self.account, delta)

    @property
    def over(self) -> bool:
        """Whether its client's queued bytes are past the budget: start
        nothing new for it (``whenUnder``)."""
        return self.ledger._over(self.account)

    def whenUnder(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` once, when the client is back under its budget
        (waiters are woken one by one, in order, while it stays under); at
        once if it is under now. A closed tab's waiter is never called."""
        if self.closed:
            return
        if not self.over:
            wake()
            return
        self.account.waiters.append((self, wake))

    def close(self) -> None:
        """The connection is gone: its place and its bytes are freed, and
        what it waited for is forgotten."""
        if self.closed:
            return
        account = self.account
        if account.waiters:
            account.waiters = deque(w for w in account.waiters if w[0] is not self)
        self.queued(-self.queuedBytes)
        self.closed = True
        self.ledger._closed(account)


class Connections:
    """A site's open connections (``site.channels``), by client.

    ``maxPerClient``: connections one client may hold (None: no cap);
    ``maxQueuedPerClient``: response bytes it may leave untaken before its
    connections start nothing new (None: no budget). ``clientOf`` names a
    peer's client and says whether it is a trusted proxy.
    """

    def __init__(
        self,
        maxPerClient: Optional[int] = None,
        maxQueuedPerClient: Optional[int] = None,
        clientOf: ClientOf = _peer_only,
    ) -> None:
        self.maxPerClient = maxPerClient
        self.maxQueuedPerClient = maxQueuedPerClient
        self.clientOf = clientOf
        #: Accounts of the clients with a connection open (or bytes queued).
        self.accounts: Dict[str, Account] = {}
        #: Open connections' protocols, each with its tab (None: not counted).
        self._open: Dict[Any, Optional[Tab]] = {}
        #: Tabs handed over by a protocol leaving its transport, by transport.
        self._handed: Dict[Any, Tab] = {}

    # -- admission
    def admit(self, address: object) -> Optional[Tab]:
        """A tab for a new connection from ``address``, or None if its
        client holds ``maxPerClient`` connections already."""
        client, proxy = self.clientOf(address)
        account = self.accounts.get(client)
        if account is None:
            account = self.accounts[client] = Account(client, not proxy)
        cap = self.maxPerClient
        if account.capped and cap is not None and account.connections >= cap:
            self._forgetIdle(account)
            return None
        account.connections += 1
        return Tab(self, account)

    # -- the set of open connections (what a shutdown drains)
    def opened(self, protocol: Any, tab: Optional[Tab]) -> None:
        """``protocol`` runs a connection admitted with ``tab``."""
        self._open[protocol] = tab

    def add(self, protocol: Any) -> None:
        """``protocol`` runs a connection: the one a tab was handed over
        on, if any (:meth:`handOver`), else one not counted."""
        if protocol in self._open:
            return
        tab = self._handed.pop(getattr(protocol, "transport", None), None)
        self._open[protocol] = tab

    def handOver(self, protocol: Any) -> None:
        """``protocol`` gives its transport to another protocol, which
        takes its tab when it is ``add``-ed."""
        tab = self._open.pop(protocol, None)
        if tab is not None:
            self._handed[protocol.transport] = tab

    def discard(self, protocol: Any) -> None:
        """``protocol``'s connection is gone: its tab is closed."""
        if protocol not in self._open:
            return
        tab = self._open.pop(protocol)
        if tab is not None:
            tab.close()

    def tabOf(self, protocol: Any) -> Tab:
        """``protocol``'s tab (one that counts nothing if it has none)."""
        tab = self._open.get(protocol)
        return tab if tab is not None else uncounted_tab()

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._open))

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, protocol: object) -> bool:
        return protocol in self._open

    # -- what one client holds
    def connectionsOf(self, client: str) -> int:
        account = self.accounts.get(client)
        return account.connections if account is not None else 0

    def queuedFor(self, client: str) -> int:
        account = self.accounts.get(client)
        return account.queuedBytes if account is not None else 0

    # -- for Tab
    def _over(self, account: Account) -> bool:
        budget = self.maxQueuedPerClient
        return account.capped and budget is not None and account.queuedBytes > budget

    def _queued(self, account: Account, delta: int) -> None:
        account.queuedBytes += delta
        if delta < 0:
            while account.waiters and not self._over(account):
                tab, wake = account.waiters.popleft()
                if not tab.closed:
                    wake()

    def _closed(self, account: Account) -> None:
        account.connections -= 1
        self._forgetIdle(account)

    def _forgetIdle(self, account: Account) -> None:
        if not account.connections and not account.queuedBytes and not account.waiters:
            self.accounts.pop(account.client, None)


def uncounted_tab() -> Tab:
    """A tab of no account: it counts nothing and is never over."""
    return Tab(Connections(), Account("", capped=False))
