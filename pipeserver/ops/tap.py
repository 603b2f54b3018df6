"""The ``twistd pipe`` command: options, and the service they build."""

from __future__ import annotations

import gc
import re
import resource
import signal
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Tuple, Union, cast

from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from pipeserver import __version__
from pipeserver.http import _twisted, clients
from pipeserver.http.settings import Settings
from pipeserver.web.site import PipeSite
from pipeserver.http.fastpath import HangupWatcher, buffered_bytes
from pipeserver.http.clients import ClientAddresses
from pipeserver.http.connections import Connections
from pipeserver.http2.connection import H2Channel
from pipeserver.domain.interfaces import IServerReactor
from pipeserver.http.logs import FORMATS, LoggingService, observer_factory
from pipeserver.http.parties import HTTPParties
from pipeserver.domain.pipe import Limits, PipeRegistry
from pipeserver.web.resource import PipeResource, open_project
from pipeserver.web.tokens import TokenFileError, Tokens
from pipeserver.web.tokens import parse as parse_tokens

if TYPE_CHECKING:
    from pipeserver.ops.metrics import PipeMetrics

log = Logger()

LONGDESC = """\
Serve HTTP pipes: a sender PUTs or POSTs a body to a path, up to N
receivers GET the same path (?n=N), and the bytes stream through with
backpressure. Nothing is stored.

With --tokens FILE every pipe needs a token (Authorization: Bearer TOKEN);
`python -m pipeserver.web.tokens PROJECT` prints a new token and its line.
The file is re-read on SIGHUP and when it changes: valid lines apply, bad
ones are skipped and logged by line number. SIGTERM drains: waiting
parties are released, transfers get --shutdown-grace seconds to finish.

Endpoints are Twisted endpoint strings, e.g. tcp:8080, tcp:8080:interface=127.0.0.1,
unix:/run/pipe.sock, ssl:8443:privateKey=key.pem:certKey=cert.pem,
systemd:domain=INET:index=0. --listen may be given several times. tcp:8080
takes connections on every interface (an open server warns of it at start);
tcp:8080:interface=127.0.0.1 only from this host. The settings in force are
logged at start.

HTTP/2 is on by default: ssl: listeners offer it by ALPN on Twisted 26+
(browsers can then stream a fetch() upload), and every listener takes
HTTP/2 with prior knowledge (curl --http2-prior-knowledge). A sender's
stream window opens by --h2-window bytes as its receivers take its bytes.
Frame budgets (resets, control frames, empty DATA, new streams, frames
that change nothing) belong to the client address, not the connection.
--no-h2 turns HTTP/2 off.

Service paths, asked for in the URL: ?queue pairs any number of senders
and receivers in arrival order, each message to one receiver (replicas of
a consumer); ?live streams one long-lived sender to readers that join and
leave at any time, each from the moment it joins (?live=line: from a line's
start).

--metrics-listen ENDPOINT serves Prometheus metrics at /metrics on a
separate endpoint (e.g. tcp:9100:interface=127.0.0.1). --log-format json
writes one JSON object per line to twistd's log (stdout with -n).
Behind nginx, set the request header X-Pipe-Progress: at-end (see
docs/proxies.md): a sender's progress lines then come once its body is in.
"""

DEFAULT_LISTEN = "tcp:8080"

# On shutdown, how long after the grace closed connections may take to flush.
FLUSH_GRACE = 5.0


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(value)
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(value)
    return number


def _log_format(value: str) -> str:
    if value not in FORMATS:
        raise ValueError(value)
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Options(usage.Options):
    """Command-line options of ``twistd pipe``."""

    synopsis = "[options]"
    longdesc = LONGDESC

    optFlags = [
        ["no-h2", None, "Speak HTTP/1.1 only: no ALPN h2 on ssl: listeners, "
         "no prior-knowledge HTTP/2 on the others."],
    ]

    optParameters = [
        ["wait-timeout", None, 300.0,
         "Seconds a party waits for its pipe to be established (and a ?live "
         "sender for a reader).", _positive_float],
        ["max-receivers", None, 256,
         "Largest n (receivers of one pipe) a client may ask for.", _positive_int],
        ["tokens", None, None,
         "File of 'PROJECT SHA256_HEX_OF_TOKEN' lines; without it the server is open. "
         "A bad line is fatal at start; on a reload it is skipped (and logged by number)."],
        ["max-waiting", None, None,
         "Parties (senders and receivers) that may wait for their pipe, in all. "
         "Default: half the file descriptors (RLIMIT_NOFILE, raised to its hard "
         "limit at start, less 100 for the server itself): a waiting party holds "
         "one, the other half is left for transfers under way.", _positive_int],
        ["max-waiting-per-project", None, None,
         "Parties that may wait for their pipe in one project; only with --tokens "
         "(without them everybody is one project). Default: a quarter of "
         "--max-waiting.", _positive_int],
        ["max-waiting-per-client", None, None,
         "Parties (senders and receivers, waiting or transferring) one client "
         "address may hold at once; an IPv6 client is its /64. Default: "
         "1/16 of --max-waiting, at least 8.", _positive_int],
        ["max-connections-per-client", None, None,
         "Connections (HTTP/1.1 or HTTP/2) one client address may hold open; "
         "past it a new one is closed at once, unread. A --trusted-proxy's are "
         "not capped. Default: twice the parties a client may hold.", _positive_int],
        ["max-queued-per-client", None, 16 * 1024 * 1024,
         "Bytes of responses one client address may leave untaken (it does not "
         "read them) before its connections start no new request.", _positive_int],
        ["stall-timeout", None, 60.0,
         "Seconds a receiver of a fan-out pipe (n >= 2, or a ?live stream "
         "with another reader) may take no byte while the pipe holds bytes for "
         "it before it is cut, so the others go on; 0 = never. A lone receiver "
         "is never cut.", _non_negative_float],
        ["idle-timeout", None, 60.0,
         "Seconds an idle connection (HTTP/1.1 or HTTP/2) is kept between requests. "
         "Waiting and streaming parties are never cut by it.", _positive_float],
        ["header-timeout", None, 20.0,
         "Seconds a client has to send its request line and headers "
         "(HTTP/2: a header block, and to acknowledge our SETTINGS), and a "
         "request body that goes to no pipe (a GET's) to end.", _positive_float],
        ["max-headers", None, 100, "Most header lines (HTTP/2: fields) in a request.",
         _positive_int],
        ["max-header-bytes", None, 16384,
         "Most bytes in a request line plus headers.", _positive_int],
        ["max-path-bytes", None, 1024, "Longest pipe path, in bytes.", _positive_int],
        ["h2-window", None, 262144,
         "HTTP/2: bytes a sender's stream window is opened by as its receivers "
         "take its bytes, beyond h2's default 64 KiB (about what the server holds "
         "per HTTP/2 sender).",
         _positive_int],
        ["h2-max-streams", None, 100,
         "HTTP/2: streams one connection may have open at once "
         "(SETTINGS_MAX_CONCURRENT_STREAMS).", _positive_int],
        ["shutdown-grace", None, 30.0,
         "Seconds transfers under way get to finish on SIGTERM.", _positive_float],
        ["log-format", None, "text",
         "Log lines as 'text' or 'json' (one JSON object per line).", _log_format],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["metrics-listen"] = []
        self["trusted-proxy"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to serve on (repeatable). Default: tcp:8080."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def opt_metrics_listen(self, endpoint: str) -> None:
        """Endpoint serving Prometheus metrics at /metrics (repeatable). Default: none."""
        self["metrics-listen"].append(endpoint)

    def opt_trusted_proxy(self, cidr: str) -> None:
        # usage.Options shows a docstring as written: one line, no indent.
        """Proxy network (CIDR or 'unix') whose X-Forwarded-For/Forwarded names the client; repeatable."""
        try:
            self["trusted-proxy"].append(clients.network(cidr))
        except ValueError:
            raise usage.UsageError(f"--trusted-proxy {cidr}: not a network or an address")

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"pipeserver {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["tokens"] is not None:
            # Refuse to start on a tokens file that cannot be used.
            try:
                with open(self["tokens"], encoding="utf-8") as handle:
                    parse_tokens(handle.read())
            except (OSError, TokenFileError, UnicodeDecodeError) as failure:
                raise usage.UsageError(f"--tokens {self['tokens']}: {failure}")


#: What signal.signal returns: the handler it replaced.
_SignalHandler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]

#: File descriptors kept for the server itself (listeners, log files,
#: epoll, modules): the rest is for its clients.
FD_RESERVE = 100
#: RLIMIT_NOFILE taken as this when it is unlimited.
FD_UNLIMITED = 1 << 20


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the soft limit
    now in force (each connection holds a descriptor, and the soft limit is
    often a tenth of what the system allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as failure:
            log.warn("Could not raise the file descriptor limit: {why}", why=str(failure))
    return fd_limit()


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return FD_UNLIMITED if soft == resource.RLIM_INFINITY else int(soft)


#: The parsed options, as ``makeService`` reads them (``Options`` is one).
OptionsLike = Mapping[str, Any]


def makeLimits(options: OptionsLike, fds: int) -> Limits:
    """The limits: the options given, the rest derived from ``fds`` (see
    the options' help): half of the descriptors left to clients may wait,
    a project (with --tokens) a quarter of that, one client 1/16."""
    usable = max(1, fds - FD_RESERVE)
    waiting = options["max-waiting"] or max(16, usable // 2)
    per_project = options["max-waiting-per-project"] or max(1, waiting // 4)
    per_client = options["max-waiting-per-client"] or max(8, waiting // 16)
    # A party holds a connection over HTTP/1.1: as many again for pages,
    # keep-alive and parties' connections not yet in their pipe.
    connections = options.get("max-connections-per-client") or 2 * per_client
    return Limits(
        max_receivers=int(options["max-receivers"]),
        max_waiting=int(waiting),
        max_waiting_per_project=int(per_project) if options["tokens"] else None,
        max_parties_per_client=int(per_client),
        stall_timeout=float(options.get("stall-timeout", 60.0)),
        max_connections_per_client=int(connections),
        max_queued_per_client=int(options.get("max-queued-per-client", 16 * 1024 * 1024)),
    )


class ServerSite(PipeSite):
    """The site twistd serves: a :class:`PipeSite` given its registry,
    settings, tokens and metrics as constructor parameters. It counts a
    request refused before it has a project through ``registry``
    (``PipeSite.rejected``), and tests read all of them."""

    def __init__(
        self,
        resource: PipeResource,
        registry: PipeRegistry,
        reactor: IServerReactor,
        *,
        timeout: float,
        settings: Settings,
        tokens: Optional[Tokens] = None,
        metrics: Optional[PipeMetrics] = None,
    ) -> None:
        super().__init__(resource, timeout=timeout, reactor=reactor, settings=settings)
        self.registry = registry
        self.tokens = tokens
        self.metrics = metrics

    def logPrefix(self) -> str:
        """Listeners log "PipeSite starting on PORT", as they always have
        (tests and deployments wait for that line)."""
        return "PipeSite"


@dataclass
class Server:
    """What ``twistd pipe`` runs, wired once by :func:`makeServer` from the
    options: every part, typed, for the service and the tests to use."""

    reactor: IServerReactor
    registry: PipeRegistry
    resource: PipeResource
    site: ServerSite
    #: The file descriptors the process may open (the default limits' base).
    fds: int
    tokens: Optional[Tokens] = None
    metrics: Optional[PipeMetrics] = None
    #: Serves ``/metrics`` (with ``--metrics-listen``), made by makeService.
    metricsSite: Optional[Site] = None
    #: The options in force, as logged at start (:func:`settings`).
    settings: str = ""
    #: ``--listen`` endpoints that take connections from anywhere on an
    #: open server (:func:`exposed`), warned about at start.
    exposed: Tuple[str, ...] = ()


def makeServer(options: OptionsLike, reactor: IServerReactor, fds: Optional[int] = None) -> Server:
    """The registry, tokens, metrics, resource and Site; the clock and
    reactor are injected. ``fds``, the descriptors the process may open,
    sets the default limits (the soft RLIMIT_NOFILE in force if not given)."""
    fds = fd_limit() if fds is None else fds
    registry = PipeRegistry(
        reactor,
        HTTPParties(),
        wait_timeout=float(options["wait-timeout"]),
        watcher=HangupWatcher(reactor),
        limits=makeLimits(options, fds),
    )
    tokens = Tokens(options["tokens"], reactor) if options["tokens"] else None
    metrics: Optional[PipeMetrics] = None
    if options.get("metrics-listen"):
        from pipeserver.ops.metrics import PipeMetrics

        metrics = PipeMetrics(reactor)
        registry.observer = metrics
        if tokens is not None:
            metrics.watch(registry, lambda: tokens.projects)
        else:
            metrics.watch(registry)
    client_of = ClientAddresses(options.get("trusted-proxy", []))
    resource = PipeResource(
        registry,
        authorize=tokens if tokens is not None else open_project,
        max_path_bytes=int(options["max-path-bytes"]),
        client_of=client_of,
    )
    site = ServerSite(
        resource,
        registry,
        reactor,
        timeout=float(options["idle-timeout"]),
        settings=Settings(
            header_timeout=float(options["header-timeout"]),
            max_headers=int(options["max-headers"]),
            max_header_bytes=int(options["max-header-bytes"]),
            h2=not options.get("no-h2", False),
            h2_window=int(options.get("h2-window", Settings.h2_window)),
            h2_max_streams=int(options.get("h2-max-streams", Settings.h2_max_streams)),
        ),
        tokens=tokens,
        metrics=metrics,
    )
    limits = registry.limits
    site.channels = Connections(
        limits.max_connections_per_client, limits.max_queued_per_client, client_of.peer
    )
    site.displayTracebacks = False
    limits = registry.limits
    return Server(
        reactor, registry, resource, site, fds, tokens, metrics,
        settings=settings(options, limits),
        exposed=() if tokens is not None else tuple(
            description for description in options["listen"] if exposed(description)
        ),
    )


def settings(options: OptionsLike, limits: Limits) -> str:
    """The options in force, one ``name=value`` each, in ``--help``'s
    order, the derived limits at the values they came to: what the server
    logs at start, so a log says how it was configured."""
    derived = {
        "max-waiting": limits.max_waiting,
        "max-waiting-per-project": limits.max_waiting_per_project,
        "max-waiting-per-client": limits.max_parties_per_client,
        "max-connections-per-client": limits.max_connections_per_client,
    }
    shown = {
        "listen": " ".join(options["listen"]),
        "metrics-listen": " ".join(options.get("metrics-listen", [])),
        "trusted-proxy": " ".join(str(network) for network in options.get("trusted-proxy", [])),
        "no-h2": "yes" if options.get("no-h2") else "no",
    }
    for entry in cast(List[List[Any]], Options.optParameters):
        name = str(entry[0])
        value = derived[name] if name in derived else options.get(name)
        if value is None:
            shown[name] = ""
        else:
            shown[name] = f"{value:g}" if isinstance(value, float) else str(value)
    return " ".join(f"{name}={value or '-'}" for name, value in shown.items())


#: Endpoint types that take TCP connections, from anywhere unless bound.
_NETWORK_ENDPOINTS = ("tcp", "tcp6", "ssl")


def exposed(description: str) -> bool:
    """Whether a tcp, tcp6 or ssl endpoint listens on every interface (no
    ``interface=``, or 0.0.0.0 / ::)."""
    kind, _, rest = description.partition(":")
    if kind.strip().lower() not in _NETWORK_ENDPOINTS:
        return False
    for field in re.split(r"(?<!\\):", rest):
        name, _, value = field.partition("=")
        if name == "interface":
            return value.replace("\\:", ":") in ("", "0.0.0.0", "::")
    return True


def makeSite(options: OptionsLike, reactor: IServerReactor, fds: Optional[int] = None) -> ServerSite:
    """The Site of :func:`makeServer`."""
    return makeServer(options, reactor, fds).site


class PipeService(service.Service):
    """Owns the registry's life: token reloads while running, a drain on stop.

    It is the first child of the service tree, so it stops last: by then the
    listeners are closed and no new connection arrives while pipes drain.
    """

    def __init__(self, server: Server, grace: float) -> None:
        self.server = server
        self.reactor = server.reactor
        self.grace = grace
        self._previousHup: _SignalHandler = None
        self._terminating = False

    def startService(self) -> None:
        super().startService()
        # What exists now (modules, the site) lives as long as the process.
        # Left to the collector, its first full pass over it stalled every
        # pipe for ~15 ms some time after start (docs/BENCHMARKS.md); frozen,
        # full passes only visit what came later.
        gc.collect()
        gc.freeze()
        limits = self.server.registry.limits
        log.info("Settings: {settings}", settings=self.server.settings)
        log.info(
            "Capacity: {fds:,} file descriptors; up to {waiting:,} waiting parties, "
            "{per_client:,} per client; {connections:,} connections per client",
            fds=max(1, self.server.fds - FD_RESERVE),
            waiting=limits.max_waiting,
            per_client=limits.max_parties_per_client,
            connections=limits.max_connections_per_client,
        )
        for description in self.server.exposed:
            log.warn(
                "--listen {endpoint} takes connections on every interface, and the "
                "server is open (no --tokens): anyone who reaches this host can use "
                "its pipes. To serve this host only: --listen {local}",
                endpoint=description,
                local=_loopback(description),
            )
        tokens = self.server.tokens
        if tokens is not None:
            tokens.start()
            self._installHup(tokens)
        # Once running: the reactor installs its own handlers as it starts.
        # Only when we start with it (twistd): a reactor already running
        # belongs to someone else (tests), whose SIGTERM stays theirs.
        if not self.reactor.running:
            self.reactor.callWhenRunning(self._installTerm)

    def _installTerm(self) -> None:
        """Handle SIGTERM ourselves: the reactor's handler makes twistd end
        by re-raising it (exit status 143) even after a clean drain. Ours
        stops the reactor the same way, and the exit says SIGTERM only if a
        transfer had to be cut (see stopService)."""
        if not hasattr(signal, "SIGTERM"):
            return

        def terminate(signum: int, frame: Optional[FrameType]) -> None:
            self.reactor.callFromThread(self._terminate)

        try:
            signal.signal(signal.SIGTERM, terminate)
        except ValueError:  # not the main thread (tests)
            pass

    def _terminate(self) -> None:
        if self._terminating:
            return
        self._terminating = True
        log.info("Received SIGTERM, shutting down.")
        self.reactor.stop()

    def _installHup(self, tokens: Tokens) -> None:
        if not hasattr(signal, "SIGHUP"):
            return

        def reload(signum: int, frame: Optional[FrameType]) -> None:
            self.reactor.callFromThread(tokens.reload)

        try:
            self._previousHup = signal.signal(signal.SIGHUP, reload)
        except ValueError:  # not the main thread (tests)
            self._previousHup = None

    def stopService(self) -> "Deferred[None]":
        super().stopService()
        tokens = self.server.tokens
        if tokens is not None:
            tokens.stop()
        if self._previousHup is not None:
            signal.signal(signal.SIGHUP, self._previousHup)
            self._previousHup = None
        registry = self.server.registry
        log.info(
            "Shutting down: {pipes} pipe(s) open, {grace}s grace",
            pipes=len(registry.pipes),
            grace=self.grace,
        )
        deadline = self.reactor.seconds() + self.grace + FLUSH_GRACE
        for channel in list(self.server.site.channels):
            # HTTP/2 clients hear now that no new stream will be served.
            if isinstance(channel, H2Channel):
                channel.goAway()
        drained: Deferred[None] = registry.shutdown(self.grace)
        drained.addCallback(lambda _: self._flushed(deadline))
        drained.addCallback(lambda _: self._exitStatus(registry.cutAtShutdown))
        return drained

    def _exitStatus(self, cut: int) -> None:
        """After a SIGTERM, twistd exits 0 unless transfers were cut; then
        it ends by SIGTERM (143), as the reactor's own handler would have
        it. ``_exitSignal`` is what twistd reads once the reactor stops."""
        if cut:
            log.warn("Shutdown cut {cut} transfer(s) at the end of the grace", cut=cut)
            if self._terminating:
                _twisted.set_exit_signal(self.reactor, signal.SIGTERM)

    def _flushed(self, deadline: float) -> "Deferred[None]":
        """Fires once every connection has sent its last bytes (or at the
        deadline): the reactor drops connections as soon as we return."""
        done: Deferred[None] = Deferred()

        def check() -> None:
            busy = False
            for channel in list(self.server.site.channels):
                if channel.requests or buffered_bytes(channel.transport):
                    busy = True
                else:
                    channel.loseConnection()
            if busy and self.reactor.seconds() < deadline:
                self.reactor.callLater(0.05, check)
            else:
                done.callback(None)

        check()
        return done


#: Listen backlog for stream endpoints that do not name one. Twisted's is 50:
#: a burst of a few hundred connects (100 pairs arriving at once) then
#: overflows the accept queue and clients wait out SYN retransmits (1 s, 3 s).
LISTEN_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """``description`` with ``:backlog=LISTEN_BACKLOG`` added when it is a
    tcp, tcp6, ssl or unix endpoint that does not set one itself."""
    kind = description.split(":", 1)[0].strip().lower()
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


class ServerService(LoggingService):
    """What :func:`makeService` returns: the service tree's root, with the
    :class:`Server` it runs."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server

    @property
    def site(self) -> ServerSite:
        return self.server.site

    @property
    def metricsSite(self) -> Optional[Site]:
        return self.server.metricsSite


def makeService(options: OptionsLike, reactor: Optional[IServerReactor] = None) -> ServerService:
    """One listening service per ``--listen`` endpoint, all on one Site."""
    if reactor is None:
        from twisted.internet import reactor as installed

        # twistd's reactors provide IReactorFromThreads too.
        reactor = cast(IServerReactor, installed)
    # At start, not at import: the process may open as many connections as
    # the system lets it, and the default limits follow from that.
    server = makeServer(options, reactor, raise_fd_limit())
    parent = ServerService(server)
    parent.observerFactory = observer_factory(
        options.get("log-format", "text"), getattr(options, "parent", None)
    )
    PipeService(server, float(options["shutdown-grace"])).setServiceParent(parent)
    endpoints: List[str] = list(options["listen"]) or [DEFAULT_LISTEN]
    for description in endpoints:
        Listener("--listen", description, server.site, reactor).setServiceParent(parent)
    if server.metrics is not None:
        from pipeserver.ops.metrics import makeMetricsSite

        metricsSite = server.metricsSite = makeMetricsSite(server.metrics, reactor)
        for description in options["metrics-listen"]:
            Listener("--metrics-listen", description, metricsSite, reactor).setServiceParent(
                parent
            )
    return parent


class StartError(SystemExit):
    """What the server cannot start with, said in one line: ``twistd``
    would print a traceback. Uncaught, Python prints the message to stderr
    (twistd's log once it logs) and exits with status 1."""


class Listener(service.Service):
    """One endpoint to serve on: strports' service for it, whose mistakes
    (an endpoint string that does not parse, a port that is taken) are one
    line (:class:`StartError`) instead of a traceback."""

    def __init__(self, option: str, description: str, factory: Site, reactor: IServerReactor) -> None:
        self.option = option
        self.description = description
        try:
            # The ones we add (backlog) are not the user's to get wrong.
            self.listener = strports.service(with_backlog(description), factory, reactor=reactor)
        except Exception as failure:  # each parser raises its own (ValueError, KeyError...)
            raise StartError(
                f"twistd pipe: {option} {description}: not an endpoint we can use "
                f"({type(failure).__name__}: {failure}). Examples: tcp:8080, "
                "tcp:8080:interface=127.0.0.1, unix:/run/pipe.sock, "
                "ssl:8443:privateKey=key.pem:certKey=cert.pem"
            ) from None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen(self.listener.privilegedStartService)

    def startService(self) -> None:
        super().startService()
        self._listen(self.listener.startService)

    def stopService(self) -> "Deferred[None]":
        super().stopService()
        stopped: Deferred[None] = self.listener.stopService()
        return stopped

    def _listen(self, start: Callable[[], None]) -> None:
        try:
            start()
        except CannotListenError as failure:
            why = getattr(failure.socketError, "strerror", None) or str(failure.socketError)
            raise StartError(
                f"twistd pipe: cannot listen on {self.description} ({self.option}): "
                f"{why.lower()}. Is another server using it? Stop it, or serve "
                "elsewhere, e.g. --listen tcp:8081:interface=127.0.0.1 "
                "(make serve LISTEN=...)"
            ) from None


def _loopback(description: str) -> str:
    """``description`` bound to loopback (the bind-all warning's advice)."""
    kind, _, rest = description.partition(":")
    fields = [f for f in re.split(r"(?<!\\):", rest) if not f.startswith("interface=")]
    loopback = "::1".replace(":", "\\:") if kind.strip().lower() == "tcp6" else "127.0.0.1"
    return ":".join([kind, *fields, f"interface={loopback}"])
