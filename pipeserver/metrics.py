"""Prometheus metrics, served on their own endpoint (``--metrics-listen``).

:class:`PipeMetrics` is the registry's observer (``pipe.Observer``): it hears
of a pipe only when it is established and when it ends, never per byte, and
reads the gauges (parties waiting, transfers active) from the registry at
scrape time. Each server has its own ``CollectorRegistry``, so several
servers in one process do not share numbers.

Every series carries a ``project`` label: the token's project, or ``""``
(which Prometheus treats as no label) on an open server.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Site

from pipeserver import _twisted
from pipeserver.errors import TEXT_PLAIN, Rejection
from pipeserver.headers import HardenedRequest
from pipeserver.interfaces import Request
from pipeserver.pipe import Outcome, Pipe, PipeRegistry, State

#: Seconds a party waited for its pipe to be established.
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class PipeMetrics:
    """Counts what the registry tells it; one ``CollectorRegistry`` per server."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.prometheus = CollectorRegistry(auto_describe=True)
        self.started = Counter(
            "pipeserver_transfers_started",
            "Pipes established (the sender and all receivers met).",
            ["project"],
            registry=self.prometheus,
        )
        self.closed = Counter(
            "pipeserver_pipes_closed",
            "Pipes gone, by outcome: completed, aborted (a side failed mid-transfer), "
            "timed_out, left (every party left while waiting), shut_down.",
            ["project", "outcome"],
            registry=self.prometheus,
        )
        self.bytesIn = Counter(
            "pipeserver_bytes_in",
            "Body bytes read from senders (a form's first part only), "
            "counted when the pipe ends.",
            ["project"],
            registry=self.prometheus,
        )
        self.bytesOut = Counter(
            "pipeserver_bytes_out",
            "Body bytes written to receivers, counted when the pipe ends.",
            ["project"],
            registry=self.prometheus,
        )
        self.waited = Histogram(
            "pipeserver_wait_seconds",
            "Seconds each party of an established pipe waited for it.",
            ["project", "role"],
            buckets=WAIT_BUCKETS,
            registry=self.prometheus,
        )
        self.rejections = Counter(
            "pipeserver_rejections",
            "Requests answered with an error, by reason.",
            ["project", "reason"],
            registry=self.prometheus,
        )
        self._registry: Optional[PipeRegistry] = None
        #: The receivers of each pipe under way (nobody joins once established).
        self._streaming: Dict[Pipe, List[Any]] = {}

    def watch(self, registry: PipeRegistry) -> None:
        """Read the gauges from ``registry`` at each scrape."""
        self._registry = registry
        self.prometheus.register(_Gauges(registry))

    # -- pipe.Observer
    def transferStarted(self, pipe: Pipe) -> None:
        project = pipe.key[0]
        self.started.labels(project).inc()
        self._streaming[pipe] = list(pipe.receivers)
        now = self.clock.seconds()
        parties = [("receiver", download.request) for download in pipe.receivers]
        if pipe.sender is not None:
            parties.append(("sender", pipe.sender.request))
        for role, request in parties:
            joined = getattr(request, "startedAt", None)
            if joined is not None:
                self.waited.labels(project, role).observe(max(0.0, now - joined))

    def pipeEnded(self, pipe: Pipe, how: Outcome) -> None:
        project = pipe.key[0]
        self.closed.labels(project, how.value).inc()
        receivers = self._streaming.pop(pipe, None)
        if receivers is None:
            return  # never established: no body went anywhere
        self.bytesIn.labels(project).inc(pipe.bytes)
        sent = sum(getattr(download.request, "sentLength", 0) for download in receivers)
        self.bytesOut.labels(project).inc(sent)

    def rejected(self, project: str, reason: str) -> None:
        self.rejections.labels(project, reason or "other").inc()

    # -- exposition
    def render(self) -> bytes:
        return generate_latest(self.prometheus)


class _Gauges:
    """Parties waiting and transfers active, read from the registry."""

    def __init__(self, registry: PipeRegistry) -> None:
        self.registry = registry

    def describe(self) -> List[GaugeMetricFamily]:
        return list(self._families({}, {}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active: Dict[str, int] = {}
        for key, pipe in list(self.registry.pipes.items()):
            if pipe.state is State.STREAMING:
                active[key[0]] = active.get(key[0], 0) + 1
        return self._families(dict(self.registry.waitingByProject), active)

    @staticmethod
    def _families(
        waiting: Dict[str, int], active: Dict[str, int]
    ) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pipeserver_parties_waiting",
            "Senders and receivers waiting for their pipe to be established.",
            labels=["project"],
        )
        for project, count in sorted(waiting.items()):
            family.add_metric([project], count)
        yield family
        family = GaugeMetricFamily(
            "pipeserver_transfers_active",
            "Established pipes whose bytes are flowing.",
            labels=["project"],
        )
        for project, count in sorted(active.items()):
            family.add_metric([project], count)
        yield family


class MetricsResource(Resource):
    """``GET /metrics``: the text exposition, rendered in the reactor thread."""

    isLeaf = True

    def __init__(self, metrics: PipeMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        if request.path != b"/metrics":
            request.setResponseCode(404)
            request.setHeader(b"content-type", TEXT_PLAIN)
            return b"Metrics are at /metrics\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.render()

    render_HEAD = render_GET


class MetricsChannel(_twisted.StreamingChannel):
    """Reads a request's head and never its body: stock twisted.web would
    spool any body, of any size, to a temporary file before answering. A
    method other than GET or HEAD gets 405, a request with a body 413, each
    at once, the body unread, and the connection closes."""

    _refused = False

    def allHeadersReceived(self) -> None:
        method = self.requestLine()[0]
        if method not in (b"GET", b"HEAD"):
            text = "[ERROR] Unsupported method: " + method.decode("latin-1", "replace") + "."
            self._refuse(Rejection(405, text, [("Allow", "GET, HEAD")]))
        elif self.length != 0:
            self._refuse(Rejection(413, "[ERROR] The metrics endpoint takes no request body."))
        else:
            super().allHeadersReceived()

    def _refuse(self, rejection: Rejection) -> None:
        self._refused = True
        self.transport.write(rejection.wire())  # type: ignore[union-attr]  # connected
        self.loseConnection()

    def allContentReceived(self) -> None:
        # lineReceived calls this right after the head of a request without
        # a body: a refused one is not rendered.
        if not self._refused:
            super().allContentReceived()


class _QuietSite(Site):
    """Scrapes come every few seconds: they get no access line."""

    def log(self, request: object) -> None:
        pass


def makeMetricsSite(metrics: PipeMetrics, reactor: Optional[IReactorTime] = None) -> Site:
    site = _QuietSite(MetricsResource(metrics), reactor=reactor)
    site.protocol = MetricsChannel  # type: ignore[assignment]  # Twisted types it as its h2 switch
    site.requestFactory = HardenedRequest  # no version in Server here either
    site.noisy = False
    site.displayTracebacks = False
    return site
