"""Streaming extraction of the first part of a ``multipart/form-data`` body.

An HTML form (the ``/noscript`` page) posts the file as a form; receivers get
that part's bytes only, with its own Content-Type and Content-Disposition.
The decoder holds at most a boundary's length of body between calls.
"""

from __future__ import annotations

import re
from typing import Optional

from twisted.web.http_headers import Headers

from pipeserver.headers import passable

#: A header name (RFC 9110 5.1: a token).
_TOKEN = re.compile(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

MAX_PREAMBLE = 64 * 1024
MAX_PART_HEADERS = 16 * 1024


class MultipartError(ValueError):
    """The form body is not the multipart it said it was."""


def boundary_of(content_type: bytes) -> Optional[bytes]:
    """The boundary of a ``multipart/form-data`` Content-Type, else None."""
    mime, _, params = content_type.partition(b";")
    if mime.strip().lower() != b"multipart/form-data":
        return None
    for param in params.split(b";"):
        name, _, value = param.strip().partition(b"=")
        if name.strip().lower() == b"boundary":
            value = value.strip()
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            return value or None
    return None


class FirstPartDecoder:
    """Feed it the body; it returns the first part's bytes as they come.

    ``headers`` is None until the part's headers are complete; ``done`` is
    True once the part's closing boundary has been seen.

    Each call costs in proportion to its own bytes, whatever their number:
    every search starts where the last one stopped, less what could be the
    start of a delimiter (or CRLF) split across calls, so a body that comes
    one byte per read costs what it costs in one piece (issue 10, item 6).
    Before the part, only that overlap is kept, plus the bytes after a
    delimiter while its line's end is awaited; the limits count every byte.
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._marker = b"\r\n" + self._delimiter
        self._buffer = bytearray()
        self._stage = "preamble"
        # Preamble bytes dropped from the front of _buffer: the limit counts them.
        self._dropped = 0
        # Whether the body's first bytes have been compared with the delimiter.
        self._startChecked = False
        # Where in _buffer the next search starts (the stage's own meaning).
        self._searchFrom = 0
        # Once a delimiter is found: where its line's CRLF may start, else None.
        self._lineFrom: Optional[int] = None
        self.headers: Optional[Headers] = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        if self._stage == "body":
            return self._body(data)
        self._buffer += data
        if self._stage == "preamble":
            rest = self._skipPreamble()
            if rest is None:
                return b""
            self._buffer = bytearray(rest)
            self._searchFrom = 0
        rest = self._readHeaders()
        if rest is None:
            return b""
        self._buffer = bytearray()
        return self._body(rest)

    def _skipPreamble(self) -> Optional[bytes]:
        buffer = self._buffer
        delimiter = self._delimiter
        if self._lineFrom is None:
            at = -1
            if not self._startChecked and len(buffer) >= len(delimiter):
                # Only the body's very start may be the delimiter without a
                # CRLF before it; nothing is dropped until this is settled.
                self._startChecked = True
                if buffer.startswith(delimiter):
                    at = 0
            if at < 0:
                at = buffer.find(self._marker, self._searchFrom)
                if at > 0 or (at == 0 and self._dropped):
                    at += 2
            if at < 0:
                if self._startChecked:
                    # Keep only what could begin a marker that ends later.
                    drop = max(0, len(buffer) - (len(self._marker) - 1))
                    del buffer[:drop]
                    self._dropped += drop
                    self._searchFrom = 0
                else:
                    self._searchFrom = max(0, len(buffer) - (len(self._marker) - 1))
                self._checkPreamble()
                return None
            self._lineFrom = at + len(delimiter)
        line_end = buffer.find(b"\r\n", self._lineFrom)
        if line_end < 0:
            # The line's CRLF may straddle this call and the next.
            start = max(self._lineFrom, len(buffer) - 1)
            del buffer[:start]
            self._dropped += start
            self._lineFrom = 0
            self._checkPreamble()
            return None
        self._stage = "headers"
        return bytes(buffer[line_end + 2 :])

    def _checkPreamble(self) -> None:
        if self._dropped + len(self._buffer) > MAX_PREAMBLE:
            raise MultipartError("no boundary in the form body")

    def _readHeaders(self) -> Optional[bytes]:
        buffer = self._buffer
        if buffer.startswith(b"\r\n"):
            end, head = 0, b""
        else:
            end = buffer.find(b"\r\n\r\n", self._searchFrom)
            if end < 0:
                if len(buffer) > MAX_PART_HEADERS:
                    raise MultipartError("form part headers too long")
                # A CRLFCRLF may straddle this call and the next.
                self._searchFrom = max(0, len(buffer) - 3)
                return None
            head = bytes(buffer[:end])
            end += 2
        headers = Headers()
        for line in head.split(b"\r\n") if head else ():
            name, sep, value = line.partition(b":")
            name = name.strip()
            if not sep or not _TOKEN.match(name):
                # Headers would raise its own error on some of these (an
                # empty name): a broken form is a MultipartError, which the
                # pipe answers by cutting the transfer, never a crash.
                raise MultipartError("bad form part header")
            value = value.strip()
            if passable(value):
                # Headers would turn a bare CR or LF into a space, hiding it
                # from the check receivers' headers get (parties.py): a value
                # with any control byte is dropped here, before that.
                headers.addRawHeader(name, value)
        self.headers = headers
        self._stage = "body"
        return bytes(buffer[end + 2 :])

    def _body(self, data: bytes) -> bytes:
        # What is held back is shorter than the marker, so this join and
        # search cost the size of ``data`` plus a constant.
        held = self._buffer
        buffer = bytes(held) + data if held else data
        at = buffer.find(self._marker)
        if at >= 0:
            self.done = True
            self._buffer = bytearray()
            return buffer[:at]
        # Keep what could be the start of the boundary for the next call.
        keep = len(self._marker) - 1
        cut = max(0, len(buffer) - keep)
        self._buffer = bytearray(buffer[cut:])
        return buffer[:cut]
