"""The rejections a request can meet, with their exact status and text (SPEC §6),
and the one way an error reply is built: :func:`plain_reply` on a request
(:meth:`Rejection.apply`), :func:`raw_reply` as bytes on the wire before a
request exists (:meth:`Rejection.wire`)."""

from __future__ import annotations

import functools
from typing import Callable, Dict, ParamSpec, Protocol, Sequence, Tuple

from twisted.web.http import RESPONSES

from pipeserver.headers import SANDBOX_CSP, SERVER


class Replying(Protocol):
    """What an error reply (``errors.plain_reply``) needs of a request."""

    def setResponseCode(self, code: int) -> None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...


#: Extra response headers: (name, value) as text, e.g. ("Retry-After", "5").
HeaderPairs = Sequence[Tuple[str, str]]

TEXT_PLAIN = b"text/plain"


def plain_headers(request: Replying, content_type: bytes = TEXT_PLAIN) -> None:
    """The pair every text answer of ours carries: its Content-Type
    (``text/plain`` without a charset, as piping-server sends it) and
    ``Access-Control-Allow-Origin: *``."""
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"access-control-allow-origin", b"*")


def plain_reply(
    request: Replying, status: int, text: str, headers: HeaderPairs = ()
) -> bytes:
    """Answer ``request`` with ``status`` and the line ``text``: sets the
    status, the text/plain + CORS pair, ``headers`` and Content-Length, and
    returns the body (``text`` and a newline) for the caller to write or
    return from ``render`` (an empty one for a HEAD)."""
    body = (text + "\n").encode("utf-8")
    request.setResponseCode(status)
    plain_headers(request)
    for name, value in headers:
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


#: Reason phrases where ours differ from ``twisted.web.http.RESPONSES``
#: (which has "Request Time-out" and no 431).
REASONS: Dict[int, bytes] = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
}


def reason_phrase(status: int) -> bytes:
    return REASONS.get(status) or RESPONSES.get(status, b"")


def raw_reply(status: int, text: str, headers: HeaderPairs = ()) -> bytes:
    """The whole HTTP/1.1 response for a request refused before a request
    object exists (the channel writes it, then closes): the same status,
    text/plain + CORS pair, extra headers and body as :func:`plain_reply`,
    with the headers every response of ours carries (``headers.harden``)
    written out, and ``Connection: close``."""
    body = (text + "\n").encode("utf-8")
    extra = b"".join(
        name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
        for name, value in headers
    )
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n" % (status, reason_phrase(status))
        + b"Access-Control-Allow-Origin: *\r\n" + extra + b"Server: " + SERVER + b"\r\n"
        b"X-Content-Type-Options: nosniff\r\nContent-Security-Policy: " + SANDBOX_CSP
        + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


def seconds(value: float) -> str:
    """Format a duration the way the texts show it: ``300``, ``0.5``."""
    return f"{value:g}"


class Rejection(Exception):
    """A request that is answered with an error instead of joining a pipe.

    ``text`` is the body without its final newline: SPEC §6's exact
    sentence, then, for some, a line saying what to do (:func:`hinted`);
    ``headers`` are extra
    response headers (``Allow``, ``Retry-After``, ``WWW-Authenticate``);
    ``reason`` is a short name for metrics (the constructor's name below).
    """

    def __init__(
        self,
        status: int,
        text: str,
        headers: Sequence[Tuple[str, str]] = (),
        reason: str = "",
    ) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = tuple(headers)
        self.reason = reason

    @property
    def body(self) -> bytes:
        return (self.text + "\n").encode("utf-8")

    def apply(self, request: Replying) -> bytes:
        """Answer ``request`` with this rejection (:func:`plain_reply`);
        returns the body."""
        return plain_reply(request, self.status, self.text, self.headers)

    def wire(self) -> bytes:
        """This rejection as a whole response on the wire (:func:`raw_reply`)."""
        return raw_reply(self.status, self.text, self.headers)


_Args = ParamSpec("_Args")


def _reason(make: Callable[_Args, Rejection]) -> Callable[_Args, Rejection]:
    """Name the rejections ``make`` builds after it, unless they have a name."""

    @functools.wraps(make)
    def named(*args: _Args.args, **kwargs: _Args.kwargs) -> Rejection:
        rejection = make(*args, **kwargs)
        if not rejection.reason:
            rejection.reason = make.__name__
        return rejection

    return named


def bad(text: str) -> Rejection:
    return Rejection(400, text)


def hinted(text: str, hint: str) -> str:
    """SPEC §6's exact ``text`` (clients match its start), then ``hint``, what
    to do instead, on a line of its own."""
    return f"{text}\n{hint}"


def _n_hint(limit: int) -> str:
    return f"n is the number of receivers, a whole number from 1 to {limit}: e.g. ?n=2"


@_reason
def reserved_path(path: str) -> Rejection:
    return bad(f"[ERROR] Cannot send to the reserved path '{path}'. (e.g. '/mypath123')")


@_reason
def content_range(method: str) -> Rejection:
    return bad(f"[ERROR] Content-Range is not supported for now in {method}")


@_reason
def sender_n_invalid(limit: int) -> Rejection:
    return bad(hinted('[ERROR] Invalid "n" query parameter', _n_hint(limit)))


@_reason
def receiver_n_invalid(limit: int) -> Rejection:
    return bad(hinted('[ERROR] Invalid query parameter "n"', _n_hint(limit)))


#: Digits of ``n`` an error text shows; a longer one is shortened.
N_DIGITS_SHOWN = 20


def _shown(n: str) -> str:
    """``n`` (an integer's decimal text) as the texts show it: in full,
    or, past ``N_DIGITS_SHOWN`` digits, ``12345678901234567890... (4301 digits)``
    rather than echoing up to a request line of digits back."""
    sign = n[:1] if n[:1] == "-" else ""
    digits = n[len(sign) :]
    if len(digits) <= N_DIGITS_SHOWN:
        return n
    return f"{sign}{digits[:N_DIGITS_SHOWN]}... ({len(digits)} digits)"


@_reason
def n_not_positive(n: str) -> Rejection:
    return bad(f"[ERROR] n should > 0, but n = {_shown(n)}.")


@_reason
def n_too_large(n: str, limit: int) -> Rejection:
    return bad(f"[ERROR] n should be at most {limit}, but n = {_shown(n)}.")


@_reason
def established(path: str) -> Rejection:
    return bad(f"[ERROR] Connection on '{path}' has been established already.")


#: What a second plain sender or receiver is told it could do instead (§12).
SECOND_SENDER_HINT = (
    "To hand over several messages on one path, add ?queue on every side (each message"
    " goes to one receiver); ?n=K and ?live are for several receivers of one stream."
)
LIVE_SENDER_HINT = "A live stream has one sender: use another path, or ?queue for several."
RECEIVERS_FULL_HINT = (
    "To share messages among receivers add ?queue on every side, to join a running"
    " stream add ?live, or for K receivers of every byte use ?n=K."
)


@_reason
def second_sender(path: str, hint: str = SECOND_SENDER_HINT) -> Rejection:
    text = f"[ERROR] Another sender has been connected on '{path}'."
    return bad(hinted(text, hint) if hint else text)


@_reason
def n_mismatch(path: str, expected: int, got: int) -> Rejection:
    # Most often a party that gave no n (so 1) meets a fan-out pipe.
    what = (
        f"add ?n={expected} to your URL (without ?n, n is 1)."
        if got == 1
        else f"use ?n={expected} in your URL."
    )
    return bad(hinted(
        f"[ERROR] The number of receivers should be {expected} but {got}.",
        f"The pipe on '{path}' is for {expected} receiver(s): {what}",
    ))


@_reason
def receivers_full(hint: str = RECEIVERS_FULL_HINT) -> Rejection:
    text = "[ERROR] The number of receivers has reached limits."
    return bad(hinted(text, hint) if hint else text)


# ---- service paths (SPEC §12)


@_reason
def queue_n(n: int) -> Rejection:
    """``?queue`` with ``?n`` other than 1."""
    return bad(
        f"[ERROR] ?queue cannot be used with ?n={n}: a queue gives each message to one"
        " receiver. Drop ?n (or use ?n=1)."
    )


@_reason
def queue_n_mismatch(path: str, got: int) -> Rejection:
    """A party without ``?queue`` asks ``?n`` other than 1 on a queue path."""
    return bad(hinted(
        f"[ERROR] The number of receivers should be 1 but {got}.",
        f"'{path}' is a queue path: each message goes to one receiver; drop ?n.",
    ))


@_reason
def live_with(other: str) -> Rejection:
    """``?live`` with ``?n`` or ``?queue`` in one URL."""
    why = (
        "a live stream takes any number of receivers"
        if other == "n"
        else "a path is either a queue or a live stream"
    )
    return bad(f"[ERROR] ?live cannot be used with ?{other}: {why}.")


@_reason
def mode_conflict(path: str, now: str, asked: str) -> Rejection:
    """A ``?queue`` or ``?live`` party on a path that is something else now
    (``now``: "a queue path", "a live stream", "a pipe for 3 receivers")."""
    return bad(hinted(
        f"[ERROR] '{path}' is {now} now: a party with ?{asked} cannot join it.",
        "Use the same query on every side, or another path.",
    ))


@_reason
def live_sender_needed(path: str) -> Rejection:
    """A plain sender on a path where receivers wait for a live stream."""
    return bad(f"[ERROR] Receivers on '{path}' wait for a live stream: send with ?live.")


@_reason
def live_invalid() -> Rejection:
    return bad('[ERROR] Invalid query parameter "live": use ?live or ?live=line')


@_reason
def queue_invalid() -> Rejection:
    return bad('[ERROR] Invalid query parameter "queue": use ?queue, with no value')


@_reason
def noscript_path_invalid() -> Rejection:
    return bad('[ERROR] Invalid query parameter "path": give a path such as /mypath')


@_reason
def download_invalid() -> Rejection:
    return bad('[ERROR] Invalid query parameter "download": give 1 (attachment) or 0 (inline)')


@_reason
def service_worker() -> Rejection:
    return bad("[ERROR] Service Worker registration is rejected.")


ALLOWED_METHODS = "GET, HEAD, POST, PUT, OPTIONS"


@_reason
def method_not_allowed(method: str, allowed: str = ALLOWED_METHODS) -> Rejection:
    return Rejection(405, f"[ERROR] Unsupported method: {method}.", [("Allow", allowed)])


@_reason
def unauthorized() -> Rejection:
    return Rejection(
        401,
        hinted(
            "[ERROR] Missing or invalid token.",
            "Pass your project's token: curl -H 'Authorization: Bearer TOKEN' URL"
            " (or curl -u x:TOKEN URL).",
        ),
        [("WWW-Authenticate", 'Bearer realm="pipe"')],
    )


@_reason
def expectation_failed() -> Rejection:
    return Rejection(417, "[ERROR] The only expectation supported is 100-continue.")


@_reason
def path_too_long(limit: int) -> Rejection:
    return Rejection(414, f"[ERROR] The path is longer than {limit} bytes.")


@_reason
def over_limit(text: str, retry_after: int = 5, reason: str = "") -> Rejection:
    return Rejection(503, f"[ERROR] {text}", [("Retry-After", str(retry_after))], reason)


# Refused by the channel before a request exists (Rejection.wire).


@_reason
def header_timeout() -> Rejection:
    return Rejection(408, "[ERROR] Request headers took too long.")


@_reason
def body_timeout() -> Rejection:
    return Rejection(408, "[ERROR] Request body took too long.")


@_reason
def headers_too_large() -> Rejection:
    return Rejection(431, "[ERROR] Request headers are too large.")


@_reason
def malformed() -> Rejection:
    return bad("[ERROR] Malformed request.")


@_reason
def internal_error() -> Rejection:
    return Rejection(500, "[ERROR] Internal server error.")


@_reason
def client_limit() -> Rejection:
    return over_limit(
        "Too many parties from your address are waiting or transferring.",
        reason="client_limit",
    )


def spectator_client_limit() -> Rejection:
    return over_limit("Too many spectators from your address.", reason="spectator_client_limit")


def spectator_limit() -> Rejection:
    return over_limit("Too many spectators on this server.", reason="spectator_limit")


def h2_waiting_senders() -> Rejection:
    return over_limit(
        "Too many HTTP/2 senders from your address or connection are waiting "
        "for their receivers.",
        reason="h2_waiting_senders",
    )


def no_sender(path: str, wait: float) -> str:
    return f"[ERROR] No sender arrived on '{path}' within {seconds(wait)} seconds."


def no_receiver(path: str, wait: float) -> str:
    """A live sender that had no reader for ``wait`` seconds."""
    return f"[ERROR] No receiver on '{path}' within {seconds(wait)} seconds."


def not_all_receivers(path: str, wait: float) -> str:
    return f"[ERROR] Not all receivers arrived on '{path}' within {seconds(wait)} seconds."
