"""``GET /api/v1/pipe/health``: what a probe or a dashboard asks of the process.

One JSON object, open to all (no token: it names no project and no pipe)::

    {"status": "ok", "service": "pipeserver", "version": "0.1.0",
     "built": "2025-06-01T10:00:00Z", "started": "2025-06-02T08:00:00Z",
     "uptime": 3600.5, "pid": 7, "memory": {"rss": 31457280},
     "fds": 12, "fd_limit": 20000, "waiting": 3, "active": 1}

``status`` is ``ok`` (200) or, once SIGTERM has started the drain,
``draining`` (503), so a balancer stops sending new parties. ``built`` is
when the installed code was written (the package's newest file), ``started``
when the server was made; ``rss`` is bytes (``null`` where ``/proc`` is not),
``fds`` the descriptors open now and ``fd_limit`` the soft limit; ``waiting``
counts parties waiting for their pipe, ``active`` transfers under way.

What costs a system call or a walk over the pipes (``/proc/self/fd`` holds
one entry per party) is taken at most once per :data:`FRESH` seconds, so a
flood of probes costs no more than one probe a second.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
from typing import Dict, Optional, Protocol

from twisted.internet.interfaces import IReactorTime

import pipeserver
from pipeserver import __version__, errors
from pipeserver.headers import PAGE_CSP
from pipeserver.domain.interfaces import Request


class RegistryLike(Protocol):
    """What the endpoint reads of ``pipe.PipeRegistry``."""

    draining: bool

    def waiting(self) -> int: ...

    def active(self) -> int: ...


#: Seconds one snapshot answers for.
FRESH = 1.0

Snapshot = Dict[str, object]


def iso(seconds: float) -> str:
    """A POSIX time as ISO 8601 in UTC, to the second: ``2025-06-02T08:00:00Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def built() -> float:
    """When the installed code was written: its package's newest file."""
    package = os.path.dirname(os.path.abspath(pipeserver.__file__))
    newest = 0.0
    with os.scandir(package) as entries:
        for entry in entries:
            if entry.is_file():
                newest = max(newest, entry.stat().st_mtime)
    return newest


def rss() -> Optional[int]:
    """Resident memory in bytes (Linux's ``/proc/self/statm``), else None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> Optional[int]:
    """Descriptors open now, without the one that lists them."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1
        except OSError:
            continue
    return None


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Health:
    """The health endpoint of one server: its registry, its clock, its start."""

    def __init__(self, registry: RegistryLike, clock: IReactorTime) -> None:
        self.registry = registry
        self.clock = clock
        self.started = clock.seconds()
        self.built = iso(built())
        self._snapshot: Optional[Snapshot] = None
        self._taken = 0.0

    def snapshot(self) -> Snapshot:
        """The object the endpoint answers, at most :data:`FRESH` seconds old."""
        now = self.clock.seconds()
        if self._snapshot is None or not 0 <= now - self._taken < FRESH:
            self._snapshot = self._take(now)
            self._taken = now
        return self._snapshot

    def _take(self, now: float) -> Snapshot:
        registry = self.registry
        return {
            "status": "draining" if registry.draining else "ok",
            "service": "pipeserver",
            "version": __version__,
            "built": self.built,
            "started": iso(self.started),
            "uptime": round(max(0.0, now - self.started), 3),
            "pid": os.getpid(),
            "memory": {"rss": rss()},
            "fds": open_fds(),
            "fd_limit": fd_limit(),
            "waiting": registry.waiting(),
            "active": registry.active(),
        }

    def render(self, request: Request) -> bytes:
        """The JSON body for a GET (a HEAD gets the same headers)."""
        state = self.snapshot()
        body = json.dumps(state, separators=(",", ":")).encode("ascii") + b"\n"
        request.setResponseCode(200 if state["status"] == "ok" else 503)
        errors.plain_headers(request, b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", PAGE_CSP)
        return body
