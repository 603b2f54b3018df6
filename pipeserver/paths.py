"""What a request's path names: a reserved page of ours, or a pipe and its key.

Two rules on top of SPEC §1's "the path exactly as sent":

- **The seed product's prefix.** ``/api/v1/pipe/PATH`` is the pipe ``PATH``
  (``/api/v1/pipe/jobs`` and ``/jobs`` are one pipe), and ``/api/v1/pipe`` and
  ``/api/v1/pipe/`` are the page ``/``. The prefix is matched exactly as sent
  and dropped as often as it is repeated. Under it live two names of ours that
  are not reserved bare: ``/api/v1/pipe/health`` and ``/api/v1/pipe/video.js``
  (a bare ``/health`` stays a pipe, as on piping-server).
- **Reserved names fold** (:func:`fold`): percent-encoding (a few levels),
  Unicode compatibility forms and case, repeated ``/``, ``.`` and ``..``
  segments, and trailing ``/`` and ``.``, so ``/Help``, ``/help/``,
  ``/help.``, ``/help%2e``, ``/%68elp`` and ``//help`` all name ``/help``. Nobody can hold a pipe that reads as one of our pages; a GET of
  such a form is the page itself (a pipe there could never get a sender).

The key of a pipe stays the path as sent (less the prefix): ``/e`` and
``/e/`` are still two pipes, unless they fold to a reserved name.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

#: The seed product's prefix: every pipe is also under it.
PREFIX = b"/api/v1/pipe"
_PREFIX_TEXT = PREFIX.decode("ascii")

#: SPEC §7's reserved pages, by their canonical names.
ROOT = "/"
PAGES = frozenset({ROOT, "/noscript", "/help", "/version", "/favicon.ico", "/robots.txt"})
#: Names of ours that exist under the prefix only, by their canonical names.
HEALTH = _PREFIX_TEXT + "/health"
VIDEO_SCRIPT = _PREFIX_TEXT + "/video.js"
PREFIXED = frozenset({HEALTH, VIDEO_SCRIPT})

#: Percent-decoding passes before a path is taken as it is: each pass that
#: changes something shortens it, but a hostile ``%2525...`` would need one
#: per level. A browser shows a path decoded once.
_DECODE_PASSES = 4


def fold(raw: bytes) -> str:
    """The form of ``raw`` (a request path, as sent) that reserved names are
    compared in: percent-decoded, NFKC, case-folded, without empty, ``.`` and
    ``..`` segments, nor trailing ``/`` and ``.`` (nothing at all is ``/``)."""
    data = raw
    for _ in range(_DECODE_PASSES):
        decoded = unquote_to_bytes(data)
        if decoded == data:
            break
        data = decoded
    text = unicodedata.normalize("NFKC", data.decode("utf-8", "replace")).casefold()
    # Segments as a browser or a proxy may normalise them: no empty ones,
    # "." and ".." resolved (RFC 3986 5.2.4), the last without trailing dots.
    segments: List[str] = []
    for segment in text.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    while segments and not segments[-1].rstrip("."):
        segments.pop()
    if segments:
        segments[-1] = segments[-1].rstrip(".")
    return "/" + "/".join(segments)


def _unprefixed(path: bytes, prefix: bytes) -> Tuple[bool, bytes]:
    """Whether ``path`` starts with ``prefix``, and ``path`` without it,
    however often it is repeated (the prefix alone is ``/``)."""
    had = False
    while path == prefix or path.startswith(prefix + b"/"):
        path = path[len(prefix) :] or b"/"
        had = True
    return had, path


@dataclass(frozen=True)
class Target:
    """What a request path names: ``reserved``, the canonical name of one of
    our pages (in ``PAGES`` or ``PREFIXED``), or else the pipe ``key``."""

    key: bytes
    reserved: Optional[str] = None


def target(raw: bytes) -> Target:
    """Where the request path ``raw`` goes (see the module's docstring)."""
    prefixed, name = _unprefixed(fold(raw).encode("utf-8"), PREFIX)
    text = name.decode("utf-8")
    if prefixed and _PREFIX_TEXT + text in PREFIXED:
        return Target(raw, _PREFIX_TEXT + text)
    if text in PAGES:
        return Target(raw, text)
    # The pipe: its key is the path as sent, only the prefix (as sent) dropped.
    return Target(_unprefixed(raw, PREFIX)[1])


def query_names(uri: bytes) -> FrozenSet[bytes]:
    """The names in ``uri``'s query, with a value or without (``?video``,
    which Twisted's ``request.args`` leaves out), percent-decoded."""
    _, _, query = uri.partition(b"?")
    names = set()
    for item in query.replace(b";", b"&").split(b"&"):
        name = item.partition(b"=")[0]
        if name:
            names.add(unquote_to_bytes(name.replace(b"+", b" ")))
    return frozenset(names)
