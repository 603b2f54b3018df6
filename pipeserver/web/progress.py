"""``GET /PATH?progress``: spectators of a pipe (SPEC §13).

A spectator watches the pipe ``PATH`` without being one of its parties: it
takes no receiver's place, holds no byte back and gets no body byte. It
gets Server-Sent Events (``text/event-stream``: what a dashboard, a bot or
``curl -N`` reads), or, when its ``Accept`` asks for HTML (a browser), a
small page whose script reads the same events and draws them.

Each event is named for the pipe's state and carries a JSON object of
counts, never an address, a header or a byte of the body::

    event: waiting     {"state":"waiting","path":"/p","n":1,"sender":true,"receivers":0,"bytes":0}
    event: streaming   {..., "bytes":65536,"total":1048576,"seconds":0.5}   (every 250 ms)
    event: done        {..., "bytes":1048576,"total":1048576,"seconds":2.1}
    event: aborted     {..., "reason":"aborted"|"timed_out"|"shut_down"}

A ``waiting`` event comes whenever who is there changes (``n`` is null
while nobody is); ``streaming`` ones every :data:`INTERVAL` while bytes
move; ``done`` or ``aborted`` ends the stream. A pipe's end stays on show
for :data:`LINGER` seconds, so a latecomer still sees how it went (its
``id:`` is sent as ``Last-Event-ID`` by a reconnecting ``EventSource``,
which is then shown the next transfer instead). With ``--tokens`` the
events of a pipe are its project's (the page itself is the same for
every path and asks for the token).

Nothing here runs per byte: one timer (while anybody watches) reads the
registry every :data:`INTERVAL`; a spectator whose connection is full is
paused (a push producer) and is written nothing until it drains, then only
the latest state. Spectators are capped per client (as parties are, and
counted apart from them) and in all.
"""

from __future__ import annotations

import collections
import json
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from pipeserver import errors
from pipeserver.domain.interfaces import Outcome, ReceiverParty, Request
from pipeserver.web import pages
from pipeserver.domain.pipe import Key, Observer, Pipe, PipeRegistry, State, display_path

log = Logger()

#: Seconds between two looks at the pipes watched (the page's refresh).
INTERVAL = 0.25
#: Seconds a pipe's end is shown to spectators who come after it.
LINGER = 30.0
#: Ends kept at most (the oldest go first): what lingering may hold.
MAX_ENDINGS = 4096
#: Seconds without an event after which a comment line keeps proxies from
#: taking the stream for idle.
KEEPALIVE = 15.0
#: What an ``EventSource`` waits before it reconnects (ms), sent first.
RETRY_MS = 2000

_OUTCOME_REASONS = {
    Outcome.ABORTED: "aborted",
    Outcome.TIMED_OUT: "timed_out",
    Outcome.SHUT_DOWN: "shut_down",
}


def event(name: str, data: Dict[str, Any], ident: Optional[str] = None) -> bytes:
    """One Server-Sent Event: its name, its id if any, its JSON data."""
    text = f"event: {name}\n"
    if ident is not None:
        text += f"id: {ident}\n"
    text += "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"
    return text.encode("ascii")


def wants_page(request: Request) -> bool:
    """Whether ``request`` asks for the HTML page rather than the events:
    its ``Accept`` names ``text/html`` and not ``text/event-stream``."""
    accept = b",".join(request.requestHeaders.getRawHeaders(b"accept", [])).lower()
    return b"text/html" in accept and b"text/event-stream" not in accept


def _sent_length(pipe: Pipe) -> Optional[int]:
    """The body's size, if the sender said it and receivers get it as is
    (a form's part has no length of its own)."""
    sender = pipe.sender
    if sender is None or sender.decoder is not None:
        return None
    for name, value in sender.receiverHeaders() or ():
        if name.lower() == b"content-length" and value.isdigit() and len(value) <= 18:
            return int(value)
    return None


@dataclass
class Ending:
    """How a pipe ended, shown for :data:`LINGER` seconds."""

    at: float
    name: str
    data: Dict[str, Any]
    #: Random, so it tells nothing of other pipes; drawn once it is shown.
    _ident: Optional[str] = None

    @property
    def ident(self) -> str:
        if self._ident is None:
            self._ident = secrets.token_hex(8)
        return self._ident

    def message(self) -> bytes:
        return event(self.name, self.data, self.ident)


@implementer(IPushProducer)
class Spectator:
    """One ``?progress`` event stream: its request, registered on it as a
    push producer, so a full connection is written nothing (``paused``)."""

    def __init__(self, hub: "Spectators", key: Key, request: Request, client: str) -> None:
        self.hub = hub
        self.key = key
        self.request = request
        self.client = client
        self.paused = False
        self.ended = False
        #: The last message it was written (the same one is not sent again).
        self.last = b""
        self.lastAt = 0.0
        #: An end it was already shown (Last-Event-ID): it waits for the next.
        self.seen = (request.getHeader(b"last-event-id") or b"").decode("latin-1")

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.hub.refresh(self)

    def stopProducing(self) -> None:
        pass  # the connection goes; notifyFinish tells the hub

    def send(self, message: bytes, now: float) -> None:
        self.last = message
        self.lastAt = now
        self.request.write(message)

    def end(self) -> None:
        """The stream is over: a clean end of the response."""
        if self.ended:
            return
        self.ended = True
        self.request.unregisterProducer()
        self.request.finish()


class Spectators:
    """Every spectator of the server, and the registry's milestones they
    need: when each transfer started, how recent ones ended.

    It is the registry's :class:`~pipeserver.domain.interfaces.Observer` and passes
    every milestone on to the one it replaced (metrics), so it must be made
    after that one is set (``resource.PipeResource`` makes it).
    """

    def __init__(
        self,
        registry: PipeRegistry,
        clock: IReactorTime,
        max_per_client: Optional[int] = None,
        max_total: int = 4096,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.max_per_client = max_per_client
        self.max_total = max_total
        self.next: Observer = registry.observer
        registry.observer = self
        self.watching: Dict[Key, List[Spectator]] = {}
        self.byClient: Dict[str, int] = {}
        self.total = 0
        #: When each pipe under way was established.
        self._started: Dict[Pipe, float] = {}
        #: Recent ends by key, oldest first.
        self._endings: "collections.OrderedDict[Key, Ending]" = collections.OrderedDict()
        self._ticker = LoopingCall(self.tick)
        self._ticker.clock = clock

    # ---- the registry's milestones (Observer)
    def transferStarted(self, pipe: Pipe) -> None:
        self._started[pipe] = self.clock.seconds()
        self.next.transferStarted(pipe)

    def pipeEnded(self, pipe: Pipe, how: Outcome) -> None:
        started = self._started.pop(pipe, None)
        self.next.pipeEnded(pipe, how)
        if how is Outcome.LEFT:
            return  # nobody came to stay: the path just waits again
        now = self.clock.seconds()
        data = self._counts(pipe)
        data["state"] = "done" if how is Outcome.COMPLETED else "aborted"
        data["bytes"] = pipe.bytes
        if started is not None:
            data["total"] = _sent_length(pipe)
            data["seconds"] = round(now - started, 3)
        if how is not Outcome.COMPLETED:
            data["reason"] = _OUTCOME_REASONS.get(how, how.value)
        ending = Ending(now, data["state"], data)
        self._endings.pop(pipe.key, None)
        self._endings[pipe.key] = ending
        while len(self._endings) > MAX_ENDINGS:
            self._endings.popitem(last=False)
        watchers = list(self.watching.get(pipe.key, ()))
        if watchers:
            # Not from inside the pipe's own state change; and to those who
            # watched it, even if a new pipe takes the path meanwhile.
            self.clock.callLater(0, self._deliverEnd, watchers, ending)

    def rejected(self, project: str, reason: str) -> None:
        self.next.rejected(project, reason)

    def receiverEvent(self, pipe: Pipe, receiver: Optional[ReceiverParty], event: str) -> None:
        self.next.receiverEvent(pipe, receiver, event)

    # ---- spectators coming and going
    def watch(self, key: Key, request: Request, client: str) -> Spectator:
        """Start ``request``'s event stream of the pipe ``key``; raises the
        503 Rejection past a cap."""
        if self.registry.draining:
            raise errors.over_limit("The server is shutting down.", reason="shutting_down")
        if self.total >= self.max_total:
            raise errors.spectator_limit()
        if self.max_per_client is not None and self.byClient.get(client, 0) >= self.max_per_client:
            raise errors.spectator_client_limit()
        spectator = Spectator(self, key, request, client)
        self.total += 1
        self.byClient[client] = self.byClient.get(client, 0) + 1
        self.watching.setdefault(key, []).append(spectator)
        request.notifyFinish().addBoth(lambda _: self._forget(spectator))
        request.setResponseCode(200)
        errors.plain_headers(request, b"text/event-stream")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"vary", b"Accept")
        # nginx would hold the events back in its buffer.
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(spectator, True)
        request.write(b"retry: %d\n\n" % RETRY_MS)
        if not self._ticker.running:
            self._ticker.start(INTERVAL, now=False).addErrback(
                lambda failure: log.failure("Spectators' timer failed", failure)
            )
        # Last: shown an end, it is let go at once (and the timer with it).
        self.refresh(spectator)
        return spectator

    def _forget(self, spectator: Spectator) -> None:
        watchers = self.watching.get(spectator.key)
        if watchers is None or spectator not in watchers:
            return
        spectator.ended = True
        watchers.remove(spectator)
        if not watchers:
            del self.watching[spectator.key]
        self.total -= 1
        left = self.byClient[spectator.client] - 1
        if left:
            self.byClient[spectator.client] = left
        else:
            del self.byClient[spectator.client]
        if not self.watching and self._ticker.running:
            self._ticker.stop()

    # ---- what they are shown
    def _counts(self, pipe: Pipe) -> Dict[str, Any]:
        return {
            "state": pipe.state.value,
            "path": pipe.path,
            "n": pipe.n,
            "sender": pipe.sender is not None,
            "receivers": len(pipe.receivers),
            "bytes": pipe.bytes,
        }

    def _ending(self, key: Key, now: float) -> Optional[Ending]:
        ending = self._endings.get(key)
        if ending is not None and now - ending.at >= LINGER:
            del self._endings[key]
            return None
        return ending

    def message(self, spectator: Spectator, now: float) -> Tuple[bytes, bool]:
        """What ``spectator`` is shown now, and whether it ends its stream."""
        key = spectator.key
        pipe = self.registry.pipes.get(key)
        if pipe is not None and pipe.state is not State.DONE:
            data = self._counts(pipe)
            if pipe.state is State.STREAMING:
                started = self._started.get(pipe, now)
                data["total"] = _sent_length(pipe)
                data["seconds"] = round(now - started, 3)
            return event(data["state"], data), False
        ending = self._ending(key, now)
        if ending is not None and ending.ident != spectator.seen:
            return ending.message(), True
        nobody = {
            "state": "waiting",
            "path": display_path(key[1]),
            "n": None,
            "sender": False,
            "receivers": 0,
            "bytes": 0,
        }
        return event("waiting", nobody), False

    def refresh(
        self, spectator: Spectator, shown: Optional[Dict[Tuple[Key, str], Tuple[bytes, bool]]] = None
    ) -> None:
        """Write ``spectator`` the state now if it changed (or a keep-alive
        comment after a silence), unless its connection is full. ``shown``
        keeps one look's messages, made once for all who watch a pipe."""
        if spectator.paused or spectator.ended:
            return
        now = self.clock.seconds()
        if shown is None:
            message, final = self.message(spectator, now)
        else:
            look = (spectator.key, spectator.seen)
            if look not in shown:
                shown[look] = self.message(spectator, now)
            message, final = shown[look]
        if message != spectator.last:
            spectator.send(message, now)
        elif now - spectator.lastAt >= KEEPALIVE:
            spectator.send(b": keep-alive\n\n", now)
            spectator.last = message  # (what it was shown last stays this)
        if final:
            spectator.end()

    def _deliverEnd(self, watchers: List[Spectator], ending: Ending) -> None:
        now = self.clock.seconds()
        for spectator in watchers:
            if spectator.ended:
                continue
            if not spectator.paused:
                spectator.send(ending.message(), now)
            # A full connection gets no more: it ends without the event,
            # and a reconnecting EventSource is shown it then.
            spectator.end()

    def tick(self) -> None:
        """Every :data:`INTERVAL` while anybody watches."""
        draining = self.registry.draining
        shown: Dict[Tuple[Key, str], Tuple[bytes, bool]] = {}
        for key, watchers in list(self.watching.items()):
            for spectator in list(watchers):
                self.refresh(spectator, shown)
                if draining and not spectator.ended and key not in self.registry.pipes:
                    spectator.end()  # nothing more will happen here


# ---- the page


# The page: requests to this server only, no form.
PAGE, PAGE_CSP = pages.load_page(
    "progress.html",
    b"style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; "
    b"base-uri 'none'; frame-ancestors 'none'",
)


def page(request: Request) -> bytes:
    """The page (any pipe path with ``?progress``, asked for as HTML): the
    same for every path; its script reads the events itself."""
    errors.plain_headers(request, b"text/html; charset=utf-8")
    request.setHeader(b"content-security-policy", PAGE_CSP)
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"vary", b"Accept")
    request.setHeader(b"content-length", b"%d" % len(PAGE))
    return b"" if request.method == b"HEAD" else PAGE

