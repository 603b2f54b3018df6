"""Prometheus metrics, served on their own endpoint (``--metrics-listen``).

:class:`PipeMetrics` is the registry's observer (``pipe.Observer``): it hears
of a pipe only when it is established and when it ends, never per byte.
What changes while pipes run (parties waiting, pipes streaming, the bytes
they have moved so far) is read from the registry and the pipes under way
at scrape time. Each server has its own ``CollectorRegistry``, so several
servers in one process do not share numbers; prometheus_client's own
collectors add ``process_*`` (memory, CPU, open file descriptors against
their limit) and ``python_info``.

One word for one thing: a **pipe** is a path's rendezvous and, once
established, its transfer (SPEC §1); every name says ``pipes``. Every series
carries a ``project`` label: the token's project, or ``""`` (which
Prometheus treats as no label) on an open server. The gauges have a sample
for every project the server knows (each project of the tokens file, or
``""``), zero included, so a dashboard shows 0 rather than no data.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Site

from pipeserver.http import _twisted
from pipeserver.errors import TEXT_PLAIN, Rejection
from pipeserver.headers import HardenedRequest
from pipeserver.domain.interfaces import ReceiverParty, Request
from pipeserver.domain.pipe import Outcome, Pipe, PipeRegistry, State

#: Seconds a party waited for its pipe to be established.
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: The projects a server knows, for the gauges' zero samples.
Projects = Callable[[], Iterable[str]]


def _open_server() -> List[str]:
    return [""]


class PipeMetrics:
    """Counts what the registry tells it; one ``CollectorRegistry`` per server."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.prometheus = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.prometheus)
        PlatformCollector(registry=self.prometheus)
        self.established = Counter(
            "pipeserver_pipes_established",
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
        self.waited = Histogram(
            "pipeserver_wait_seconds",
            "Seconds each party of an established pipe waited for it.",
            ["project", "role"],
            buckets=WAIT_BUCKETS,
            registry=self.prometheus,
        )
        self.receiverEvents = Counter(
            "pipeserver_receiver_events",
            "Receivers that joined or left a live stream under way (joined, left), and "
            "receivers of any pipe cut for taking no byte for --stall-timeout (cut_stalled).",
            ["project", "event"],
            registry=self.prometheus,
        )
        self.rejections = Counter(
            "pipeserver_rejections",
            "Requests answered with an error, by reason.",
            ["project", "reason"],
            registry=self.prometheus,
        )
        #: Bytes of the pipes that ended, by project; those under way are
        #: added at scrape time (_Live).
        self.bytesIn: Dict[str, int] = {}
        self.bytesOut: Dict[str, int] = {}
        #: The receivers of each pipe under way (only a live stream's join
        #: once established; one that leaves still counts what it was sent).
        self.streaming: Dict[Pipe, List[ReceiverParty]] = {}
        self.prometheus.register(_Bytes(self))

    def watch(self, registry: PipeRegistry, projects: Projects = _open_server) -> None:
        """Read the gauges from ``registry`` at each scrape, with a sample
        for each of ``projects`` (the tokens file's, or ``""``) even at zero."""
        self.prometheus.register(_Gauges(registry, self, projects))

    # -- pipe.Observer
    def transferStarted(self, pipe: Pipe) -> None:
        project = pipe.key[0]
        self.established.labels(project).inc()
        self.streaming[pipe] = list(pipe.receivers)
        now = self.clock.seconds()
        parties = [("receiver", download.request) for download in pipe.receivers]
        if pipe.sender is not None:
            parties.append(("sender", pipe.sender.request))
        for role, request in parties:
            self.waited.labels(project, role).observe(max(0.0, now - request.startedAt))

    def pipeEnded(self, pipe: Pipe, how: Outcome) -> None:
        project = pipe.key[0]
        self.closed.labels(project, how.value).inc()
        receivers = self.streaming.pop(pipe, None)
        if receivers is None:
            return  # never established: no body went anywhere
        self.bytesIn[project] = self.bytesIn.get(project, 0) + pipe.bytes
        self.bytesOut[project] = self.bytesOut.get(project, 0) + _sent(receivers)

    def rejected(self, project: str, reason: str) -> None:
        self.rejections.labels(project, reason or "other").inc()

    def receiverEvent(self, pipe: Pipe, receiver: Optional[ReceiverParty], event: str) -> None:
        self.receiverEvents.labels(pipe.key[0], event).inc()
        if event == "joined" and receiver is not None:
            receivers = self.streaming.get(pipe)
            if receivers is not None and receiver not in receivers:
                receivers.append(receiver)

    # -- exposition
    def render(self) -> bytes:
        return generate_latest(self.prometheus)


def _sent(receivers: List[ReceiverParty]) -> int:
    return sum(download.request.sentLength for download in receivers)


class _Bytes:
    """Body bytes in and out, counted as they move: those of the pipes that
    ended plus, at each scrape, what the pipes under way have moved so far
    (a pipe's counts only grow, and its last ones become the ended total,
    so the counters never go back)."""

    def __init__(self, metrics: PipeMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> List[CounterMetricFamily]:
        return list(self._families({}, {}))

    def collect(self) -> Iterator[CounterMetricFamily]:
        metrics = self.metrics
        got = dict(metrics.bytesIn)
        sent = dict(metrics.bytesOut)
        for pipe, receivers in list(metrics.streaming.items()):
            project = pipe.key[0]
            got[project] = got.get(project, 0) + pipe.bytes
            sent[project] = sent.get(project, 0) + _sent(receivers)
        return self._families(got, sent)

    @staticmethod
    def _families(got: Dict[str, int], sent: Dict[str, int]) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "pipeserver_bytes_in",
            "Body bytes read from senders (a form's first part only), as they come.",
            labels=["project"],
        )
        for project, count in sorted(got.items()):
            family.add_metric([project], count)
        yield family
        family = CounterMetricFamily(
            "pipeserver_bytes_out",
            "Body bytes written to receivers, as they go.",
            labels=["project"],
        )
        for project, count in sorted(sent.items()):
            family.add_metric([project], count)
        yield family


class _Gauges:
    """Parties waiting and pipes streaming, read from the registry."""

    def __init__(self, registry: PipeRegistry, metrics: PipeMetrics, projects: Projects) -> None:
        self.registry = registry
        self.metrics = metrics
        self.projects = projects

    def describe(self) -> List[GaugeMetricFamily]:
        return list(self._families({}, {}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        known = dict.fromkeys(self.projects(), 0)
        waiting = dict(known, **self.registry.waitingByProject)
        streaming = dict(known)
        for pipe in self.registry.allPipes():
            if pipe.state is State.STREAMING:
                project = pipe.key[0]
                streaming[project] = streaming.get(project, 0) + 1
        queued: Dict[Tuple[str, str], int] = {}
        for project in known:
            queued[(project, "sender")] = queued[(project, "receiver")] = 0
        for key, line in list(self.registry.queues.items()):
            senders, receivers = line.depth()
            for role, count in (("sender", senders), ("receiver", receivers)):
                queued[(key[0], role)] = queued.get((key[0], role), 0) + count
        return self._families(waiting, streaming, queued)

    @staticmethod
    def _families(
        waiting: Dict[str, int],
        streaming: Dict[str, int],
        queued: Optional[Dict[Tuple[str, str], int]] = None,
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
            "pipeserver_pipes_streaming",
            "Established pipes whose bytes are flowing.",
            labels=["project"],
        )
        for project, count in sorted(streaming.items()):
            family.add_metric([project], count)
        yield family
        family = GaugeMetricFamily(
            "pipeserver_queue_waiting",
            "Senders and receivers waiting on ?queue paths (the queues' depth), by role.",
            labels=["project", "role"],
        )
        for (project, role), count in sorted((queued or {}).items()):
            family.add_metric([project, role], count)
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
