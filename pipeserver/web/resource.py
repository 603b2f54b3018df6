"""Routing: reserved pages, CORS, checks on what was asked, and error replies."""

from __future__ import annotations

import functools
import re
from typing import Callable, Dict, Optional, Tuple, Union

from twisted.web.http import NO_CONTENT
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pipeserver import errors, paths
from pipeserver.http import disposition
from pipeserver.web import pages, progress, video
from pipeserver.http.clients import ClientAddresses
from pipeserver.errors import Rejection
from pipeserver.web.health import Health
from pipeserver.domain.interfaces import Request
from pipeserver.paths import Target
from pipeserver.domain.pipe import Mode, PipeRegistry

_INTEGER = re.compile(rb"^\s*([+-]?)(\d+)\s*$")
#: Digits past which ``n`` is not parsed at all: it is out of range anyway,
#: and int() refuses more than 4,300 (sys.get_int_max_str_digits()).
_N_MAX_DIGITS = 18

#: Returns the request's project, or raises the 401 Rejection.
Authorizer = Callable[[Request], str]
#: A reserved page: the request in, the body out (headers set on the request).
Page = Callable[[Request], bytes]
#: What answers a GET of a pipe path with a query flag (``?video``) instead
#: of joining the pipe: the request and the pipe's path (its key, the
#: prefix dropped) in, a body or NOT_DONE_YET out.
View = Callable[[Request, bytes], Union[bytes, int]]

#: The methods of ``/api/v1/pipe/health``.
HEALTH_METHODS = "GET, HEAD, OPTIONS"


def open_project(request: Request) -> str:
    """Without tokens everybody shares one anonymous project."""
    return ""


class PipeResource(Resource):
    """The one resource of the server: every path is a pipe or a reserved page."""

    isLeaf = True

    def __init__(
        self,
        registry: PipeRegistry,
        authorize: Authorizer = open_project,
        max_path_bytes: int = 1024,
        client_of: Callable[[Request], str] = ClientAddresses(),
    ) -> None:
        super().__init__()
        self.registry = registry
        self.authorize = authorize
        self.max_path_bytes = max_path_bytes
        #: The client address a party counts against (clients.py).
        self.client_of = client_of
        self.health = Health(registry, registry.clock)
        #: ``?progress``'s spectators; the registry's observer from now on.
        self.spectators = progress.Spectators(
            registry,
            registry.clock,
            max_per_client=registry.limits.max_parties_per_client,
            max_total=registry.limits.max_waiting,
        )
        #: Our pages by canonical name (paths.PAGES and paths.PREFIXED).
        self.reserved: Dict[str, Page] = {
            "/": pages.index,
            "/noscript": pages.noscript,
            "/help": functools.partial(pages.help_page, tokens=authorize is not open_project),
            "/version": pages.version,
            "/favicon.ico": pages.favicon,
            "/robots.txt": pages.robots,
            paths.HEALTH: self.health.render,
            paths.VIDEO_SCRIPT: video.script,
        }
        #: Query flags a GET of a pipe path is answered by, never joining it.
        self.views: Dict[bytes, View] = {
            b"video": self._video,
            b"progress": self._progress,
        }

    def render(self, request: Request) -> Union[bytes, int]:
        try:
            return self._route(request)
        except Rejection as rejection:
            self.registry.observer.rejected(request.project or "", rejection.reason)
            return reject(request, rejection)

    def _route(self, request: Request) -> Union[bytes, int]:
        method = request.method
        if method == b"OPTIONS":
            return preflight(request, tokens=self.authorize is not open_project)
        target = paths.target(request.path)
        if target.reserved == paths.HEALTH and method not in (b"GET", b"HEAD"):
            raise errors.method_not_allowed(method.decode("latin-1"), HEALTH_METHODS)
        if method in (b"GET", b"HEAD"):
            if target.reserved is not None:
                return self._page(request, self.reserved[target.reserved], method == b"HEAD")
            if self.views and b"?" in request.uri:
                names = paths.query_names(request.uri)
                for flag, view in self.views.items():
                    if flag in names:
                        return view(request, target.key)
            return self._receive(request, target.key, method == b"HEAD")
        if method in (b"PUT", b"POST"):
            return self._send(request, target)
        raise errors.method_not_allowed(method.decode("latin-1"))

    def _video(self, request: Request, path: bytes) -> bytes:
        """``?video``: the player page, which fetches ``path`` itself."""
        return video.page(request)

    def _progress(self, request: Request, path: bytes) -> Union[bytes, int]:
        """``?progress``: the page (asked for as HTML), or the pipe's events
        (tokens as for the pipe itself); never a party of the pipe."""
        if progress.wants_page(request):
            return progress.page(request)
        project = self._project(request, path)
        if request.method == b"HEAD":
            errors.plain_headers(request, b"text/event-stream")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"vary", b"Accept")
            return b""
        self.spectators.watch((project, path), request, self.client_of(request))
        return NOT_DONE_YET

    def _page(self, request: Request, page: Page, head: bool) -> Union[bytes, int]:
        """A reserved page, its HEAD with the same headers as its GET."""
        body = page(request)
        if request.code == NO_CONTENT:
            # Twisted's render() would add "Content-Length: 0", which a 204
            # must not carry (RFC 9110 8.6).
            request.write(b"")
            request.finish()
            return NOT_DONE_YET
        request.setHeader(b"content-length", b"%d" % len(body))
        # A HEAD that returned a body would be logged as a Twisted warning.
        return b"" if head else body

    def _project(self, request: Request, path: bytes) -> str:
        if len(path) > self.max_path_bytes:
            raise errors.path_too_long(self.max_path_bytes)
        project = self.authorize(request)
        request.project = project
        return project

    def _send(self, request: Request, target: Target) -> int:
        project, n, (mode, line) = self._checkSend(request, target)
        pipe = self.registry.send(
            (project, target.key), n, request, self.client_of(request), mode, line
        )
        request.mode = pipe.mode.value
        return NOT_DONE_YET

    def _checkSend(self, request: Request, target: Target) -> Tuple[str, int, Tuple[Mode, bool]]:
        """A send's checks that need no body; raises their Rejection."""
        if target.reserved == paths.HEALTH:
            raise errors.method_not_allowed(request.method.decode("latin-1"), HEALTH_METHODS)
        if target.reserved is not None:
            # Named as the page it folds to: /Help and /help%2e are /help.
            raise errors.reserved_path(target.reserved)
        if request.getHeader(b"content-range") is not None:
            raise errors.content_range(request.method.decode("latin-1"))
        project = self._project(request, target.key)
        n = self._n(request, errors.sender_n_invalid)
        return project, n, self._mode(request, n)

    def checkBeforeBody(self, request: Request) -> Optional[Rejection]:
        """The Rejection a PUT/POST would meet before its body, if any.

        The channel asks this of a sender that waits for ``100 Continue``:
        a sender refused now (no token, a reserved path, a bad ``n``) is
        told so instead of being invited to upload a body for nothing.
        """
        try:
            self._checkSend(request, paths.target(request.path))
        except Rejection as rejection:
            self.registry.observer.rejected(request.project or "", rejection.reason)
            return rejection
        return None

    def _receive(self, request: Request, path: bytes, head: bool) -> Union[bytes, int]:
        if request.getHeader(b"service-worker") == b"script":
            raise errors.service_worker()
        project = self._project(request, path)
        n = self._n(request, errors.receiver_n_invalid)
        mode, line = self._mode(request, n)
        disposition.requested(request.args)  # its 400 now, not once streaming
        if head:
            # Answer at once and take no place in the pipe.
            errors.plain_headers(request)
            return b""
        pipe = self.registry.receive(
            (project, path), n, request, self.client_of(request), mode, line
        )
        request.mode = pipe.mode.value
        return NOT_DONE_YET

    def _mode(self, request: Request, n: int) -> Tuple[Mode, bool]:
        """What the URL asks of its path (SPEC §12): ``?queue``, ``?live``
        (and whether ``?live=line``) or neither; raises their 400s."""
        if b"?" not in request.uri:
            return Mode.PLAIN, False
        names = paths.query_names(request.uri)
        live, queue = b"live" in names, b"queue" in names
        if queue and request.args.get(b"queue", [b""])[0]:
            raise errors.queue_invalid()
        if live:
            value = request.args.get(b"live", [b""])[0]
            if value not in (b"", b"line"):
                raise errors.live_invalid()
            if queue:
                raise errors.live_with("queue")
            if b"n" in names:
                raise errors.live_with("n")
            return Mode.LIVE, value == b"line"
        if queue:
            if n != 1:
                raise errors.queue_n(n)
            return Mode.QUEUE, False
        return Mode.PLAIN, False

    def _n(self, request: Request, invalid: Callable[[int], Rejection]) -> int:
        values = request.args.get(b"n")
        if not values:
            return 1
        match = _INTEGER.match(values[0])
        if match is None:
            raise invalid(self.registry.max_receivers)
        sign, digits = match.groups()
        digits = digits.lstrip(b"0") or b"0"
        text = ("-" if sign == b"-" and digits != b"0" else "") + digits.decode("ascii")
        if len(digits) > _N_MAX_DIGITS:
            if text.startswith("-"):
                raise errors.n_not_positive(text)
            raise errors.n_too_large(text, self.registry.max_receivers)
        n = int(text)
        if n <= 0:
            raise errors.n_not_positive(text)
        if n > self.registry.max_receivers:
            raise errors.n_too_large(text, self.registry.max_receivers)
        return n


def reject(request: Request, rejection: Rejection) -> bytes:
    body = rejection.apply(request)
    if request.method == b"HEAD":
        return b""  # the GET's headers, and no Twisted warning about a body
    return body


def preflight(request: Request, tokens: bool) -> bytes:
    """piping-server's preflight answer; browsers may send a token only
    where one is asked for."""
    request.setResponseCode(200)
    request.setHeader(b"access-control-allow-origin", b"*")
    request.setHeader(b"access-control-allow-methods", errors.ALLOWED_METHODS.encode())
    allowed = b"Content-Type, Content-Disposition, X-Piping"
    request.setHeader(
        b"access-control-allow-headers", allowed + b", Authorization" if tokens else allowed
    )
    # Lets a page see which request headers this server takes (X-Piping).
    request.setHeader(b"access-control-expose-headers", b"Access-Control-Allow-Headers")
    request.setHeader(b"access-control-max-age", b"86400")
    if request.getHeader(b"access-control-request-private-network") == b"true":
        request.setHeader(b"access-control-allow-private-network", b"true")
    request.setHeader(b"content-length", b"0")
    return b""
