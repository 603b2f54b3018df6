"""Streaming extraction of the first part of a ``multipart/form-data`` body.

An HTML form (the ``/noscript`` page) posts the file as a form; receivers get
that part's bytes only, with its own Content-Type and Content-Disposition.
The decoder holds at most a boundary's length of body between calls.
"""

from __future__ import annotations

from typing import Optional

from twisted.web.http_headers import Headers

from pipeserver.headers import passable

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
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._marker = b"\r\n" + self._delimiter
        self._buffer = b""
        self._stage = "preamble"
        self.headers: Optional[Headers] = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        if self._stage == "preamble":
            buffer = self._skipPreamble(buffer)
            if buffer is None:
                return b""
        if self._stage == "headers":
            buffer = self._readHeaders(buffer)
            if buffer is None:
                return b""
        return self._body(buffer)

    def _skipPreamble(self, buffer: bytes) -> Optional[bytes]:
        at = 0 if buffer.startswith(self._delimiter) else buffer.find(self._marker)
        if at > 0:
            at += 2
        line_end = buffer.find(b"\r\n", at + len(self._delimiter)) if at >= 0 else -1
        if line_end < 0:
            if len(buffer) > MAX_PREAMBLE:
                raise MultipartError("no boundary in the form body")
            self._buffer = buffer
            return None
        self._stage = "headers"
        return buffer[line_end + 2 :]

    def _readHeaders(self, buffer: bytes) -> Optional[bytes]:
        if buffer.startswith(b"\r\n"):
            end, head = 0, b""
        else:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_PART_HEADERS:
                    raise MultipartError("form part headers too long")
                self._buffer = buffer
                return None
            head = buffer[:end]
            end += 2
        headers = Headers()
        for line in head.split(b"\r\n") if head else ():
            name, sep, value = line.partition(b":")
            if not sep:
                raise MultipartError("bad form part header")
            value = value.strip()
            if passable(value):
                # Headers would turn a bare CR or LF into a space, hiding it
                # from the check receivers' headers get (pipe.py): a value
                # with any control byte is dropped here, before that.
                headers.addRawHeader(name.strip(), value)
        self.headers = headers
        self._stage = "body"
        return buffer[end + 2 :]

    def _body(self, buffer: bytes) -> bytes:
        at = buffer.find(self._marker)
        if at >= 0:
            self.done = True
            return buffer[:at]
        # Keep what could be the start of the boundary for the next call.
        keep = len(self._marker) - 1
        cut = max(0, len(buffer) - keep)
        self._buffer = buffer[cut:]
        return buffer[:cut]
