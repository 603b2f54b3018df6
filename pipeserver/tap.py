"""The ``twistd pipe`` command: options, and the service they build."""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.application import service, strports
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from pipeserver import __version__
from pipeserver.channel import HangupWatcher, PipeSite
from pipeserver.pipe import PipeRegistry
from pipeserver.resource import PipeResource

LONGDESC = """\
Serve HTTP pipes: a sender PUTs or POSTs a body to a path, up to N
receivers GET the same path (?n=N), and the bytes stream through with
backpressure. Nothing is stored.

Endpoints are Twisted endpoint strings, e.g. tcp:8080, tcp:8080:interface=127.0.0.1,
unix:/run/pipe.sock, ssl:8443:privateKey=key.pem:certKey=cert.pem,
systemd:domain=INET:index=0. --listen may be given several times.
"""

DEFAULT_LISTEN = "tcp:8080"


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(value)
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Options(usage.Options):
    """Command-line options of ``twistd pipe``."""

    synopsis = "[options]"
    longdesc = LONGDESC

    optParameters = [
        ["wait-timeout", None, 300.0,
         "Seconds a party waits for its pipe to be established.", _positive_float],
        ["max-receivers", None, 256,
         "Largest n (receivers of one pipe) a client may ask for.", _positive_int],
        ["idle-timeout", None, 60.0,
         "Seconds an idle connection (between or inside request headers) is kept. "
         "Waiting and streaming parties are never cut by it.", _positive_float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to serve on (repeatable). Default: tcp:8080."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"pipeserver {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]


def makeSite(options: Any, reactor: Any) -> PipeSite:
    """The Site with its registry; the clock and reactor are injected."""
    registry = PipeRegistry(
        reactor,
        wait_timeout=float(options["wait-timeout"]),
        max_receivers=int(options["max-receivers"]),
        watcher=HangupWatcher(reactor),
    )
    site = PipeSite(
        PipeResource(registry),
        timeout=float(options["idle-timeout"]),
        reactor=reactor,
    )
    site.registry = registry  # type: ignore[attr-defined]
    site.displayTracebacks = False
    return site


def makeService(options: Any, reactor: Optional[IReactorCore] = None) -> service.MultiService:
    """One listening service per ``--listen`` endpoint, all on one Site."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor  # type: ignore[assignment]
    site = makeSite(options, reactor)
    parent = service.MultiService()
    endpoints: List[str] = list(options["listen"]) or [DEFAULT_LISTEN]
    for description in endpoints:
        strports.service(description, site, reactor=reactor).setServiceParent(parent)
    parent.site = site  # type: ignore[attr-defined]
    return parent
