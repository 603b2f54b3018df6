"""Response headers that keep what a client sent from acting on our origin.

A receiver URL is a document on this server's origin whose bytes and
Content-Type the sender chose. Rewriting ``text/html`` is not enough: SVG,
XHTML, XML, a Content-Type a browser reads differently from us, or none at
all (sniffed) all run script. So every response says "do not sniff" and,
unless a page set its own policy, "this is a sandbox that may load nothing"
(:func:`harden`), and values passed on from a sender are checked first
(:func:`passable`).
"""

from __future__ import annotations

import re
import time
from typing import List, Tuple

from twisted.web import http, server
from twisted.web.http_headers import Headers

#: What ``Server`` says: no version, nothing to look up in a CVE list.
SERVER = b"pipeserver"

#: For every response without a policy of its own (receivers above all):
#: ``sandbox`` gives the document an opaque origin and no script, forms,
#: popups or plugins; ``default-src 'none'`` lets it load nothing, not even
#: from here, so markup that survives the sandbox cannot make the browser
#: join a pipe (Basic credentials are sent along); inline style is allowed
#: so that browsers' own viewers (plain text, images) still lay out.
SANDBOX_CSP = b"sandbox; default-src 'none'; style-src 'unsafe-inline'"

#: The same for the server's own text pages, which no other site may frame.
PAGE_CSP = SANDBOX_CSP + b"; frame-ancestors 'none'"

# A field value may hold visible bytes, obs-text, SP and HTAB (RFC 9110
# 5.5); any other control byte (NUL, CR, LF, ESC, DEL, ...) is refused.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def passable(value: bytes) -> bool:
    """Whether ``value``, sent by a client, may be passed on as a header value."""
    return _CONTROL.search(value) is None


def harden(headers: Headers) -> None:
    """Set what every response carries, just before its head is written."""
    headers.setRawHeaders(b"server", [SERVER])
    headers.setRawHeaders(b"x-content-type-options", [b"nosniff"])
    if not headers.hasHeader(b"content-security-policy"):
        headers.setRawHeaders(b"content-security-policy", [SANDBOX_CSP])


# (the second, its Date): a Date header shows whole seconds only.
_lastDate: List[Tuple[int, bytes]] = [(-1, b"")]


def http_date() -> bytes:
    """The Date header for now, as Twisted's ``datetimeToString()`` gives
    it, formatted once a second."""
    second = int(time.time())
    cached = _lastDate[0]
    if cached[0] != second:
        cached = (second, http.datetimeToString(second))
        _lastDate[0] = cached
    return cached[1]


def head(version: bytes, code: bytes, reason: bytes, headers: Headers) -> bytes:
    """A response head as ``HTTPChannel.writeHeaders`` writes it, in one
    bytes: its ~40 pieces went to ``writeSequence``, which checks each one."""
    parts = [version, b" ", code, b" ", reason, b"\r\n"]
    for name, values in headers.getAllRawHeaders():
        for value in values:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class HardenedRequest(server.Request):
    """A request whose response head always gets :func:`harden`."""

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            # The one place every response head passes (pages, pipes,
            # rejections, Twisted's own answers).
            harden(self.responseHeaders)
        super().write(data)
