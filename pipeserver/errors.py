"""The rejections a request can meet, with their exact status and text (SPEC §6)."""

from __future__ import annotations

import functools
from typing import Callable, Sequence, Tuple, TypeVar


def seconds(value: float) -> str:
    """Format a duration the way the texts show it: ``300``, ``0.5``."""
    return f"{value:g}"


class Rejection(Exception):
    """A request that is answered with an error instead of joining a pipe.

    ``text`` is the body without its final newline; ``headers`` are extra
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


_Make = TypeVar("_Make", bound=Callable[..., Rejection])


def _reason(make: _Make) -> _Make:
    """Name the rejections ``make`` builds after it, unless they have a name."""

    @functools.wraps(make)
    def named(*args, **kwargs):  # type: ignore[no-untyped-def]
        rejection = make(*args, **kwargs)
        if not rejection.reason:
            rejection.reason = make.__name__
        return rejection

    return named  # type: ignore[return-value]


def bad(text: str) -> Rejection:
    return Rejection(400, text)


@_reason
def reserved_path(path: str) -> Rejection:
    return bad(f"[ERROR] Cannot send to the reserved path '{path}'. (e.g. '/mypath123')")


@_reason
def content_range(method: str) -> Rejection:
    return bad(f"[ERROR] Content-Range is not supported for now in {method}")


@_reason
def sender_n_invalid() -> Rejection:
    return bad('[ERROR] Invalid "n" query parameter')


@_reason
def receiver_n_invalid() -> Rejection:
    return bad('[ERROR] Invalid query parameter "n"')


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


@_reason
def second_sender(path: str) -> Rejection:
    return bad(f"[ERROR] Another sender has been connected on '{path}'.")


@_reason
def n_mismatch(expected: int, got: int) -> Rejection:
    return bad(f"[ERROR] The number of receivers should be {expected} but {got}.")


@_reason
def receivers_full() -> Rejection:
    return bad("[ERROR] The number of receivers has reached limits.")


@_reason
def noscript_path_invalid() -> Rejection:
    return bad('[ERROR] Invalid query parameter "path": give a path such as /mypath')


@_reason
def service_worker() -> Rejection:
    return bad("[ERROR] Service Worker registration is rejected.")


ALLOWED_METHODS = "GET, HEAD, POST, PUT, OPTIONS"


@_reason
def method_not_allowed(method: str) -> Rejection:
    return Rejection(
        405, f"[ERROR] Unsupported method: {method}.", [("Allow", ALLOWED_METHODS)]
    )


@_reason
def unauthorized() -> Rejection:
    return Rejection(
        401,
        "[ERROR] Missing or invalid token.",
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


@_reason
def internal_error() -> Rejection:
    return Rejection(500, "[ERROR] Internal server error.")


@_reason
def client_limit() -> Rejection:
    return over_limit(
        "Too many parties from your address are waiting or transferring.",
        reason="client_limit",
    )


def no_sender(path: str, wait: float) -> str:
    return f"[ERROR] No sender arrived on '{path}' within {seconds(wait)} seconds."


def not_all_receivers(path: str, wait: float) -> str:
    return f"[ERROR] Not all receivers arrived on '{path}' within {seconds(wait)} seconds."
