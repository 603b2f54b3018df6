"""A chunked request-body decoder that hands body bytes on without copying.

Twisted's ``_ChunkedTransferDecoder`` appends every read to a ``bytearray``
and copies each chunk out of it again: two copies of every body byte, plus
Python work per chunk. :class:`ViewChunkedDecoder` is that same decoder
(it inherits all of its parsing, limits and errors) with one fast path:
while it is inside a chunk's data and has nothing buffered, the chunk's bytes
go to the callback as the read itself or a ``memoryview`` of it. Only the
framing (size lines, CRLFs, trailers) goes through the stock code, fed up to
the next line end at a time, so it sees exactly the bytes it would have seen,
in pieces it already has to accept from the network anyway.

Callbacks therefore get ``bytes`` or ``memoryview``; ``pipe.Pipe.write``
accepts both. With a ``batchCallback`` the pieces of one read go out in one
call, so a pipe sends them to each receiver in one ``sendmsg``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Union

from twisted.web import http

from pipeserver.http._twisted import ChunkedTransferDecoder

Data = Union[bytes, memoryview]

_HEX = b"0123456789abcdefABCDEF"
# Read once: every attribute of twisted.web.http goes through a slow
# deprecation proxy.
_MAX_LINE = http.maxChunkSizeLineLength


class ViewChunkedDecoder(ChunkedTransferDecoder):
    """Twisted's chunked decoder, whose ``state``, ``length`` and ``_buffer``
    it reads and sets (checked in _twisted.py), with a fast path for body bytes."""

    #: Optional: called with all the body pieces of one read at once (one or
    #: more); without it each piece goes to ``dataCallback``.
    batchCallback: Optional[Callable[[List[Data]], None]] = None

    def _deliver(self, pieces: List[Data]) -> None:
        if pieces and self.batchCallback is not None:
            self.batchCallback(pieces)
        else:
            for piece in pieces:
                self.dataCallback(piece)  # type: ignore[arg-type]  # typed bytes; takes views too (see above)

    def dataReceived(self, data: bytes) -> None:
        feed = super().dataReceived
        end = len(data)
        if not end:
            return
        view = memoryview(data)
        pos = 0
        pieces: List[Data] = []
        try:
            while pos < end:
                state = self.state
                if state == "BODY" and not self._buffer:
                    take = min(self.length, end - pos)
                    pieces.append(data if take == end else view[pos : pos + take])
                    pos += take
                    self.length -= take
                    if self.length == 0:
                        self.state = "CRLF"
                elif state == "CRLF" and not self._buffer and data.startswith(b"\r\n", pos):
                    # What the stock code does with a lone CRLF, without a call.
                    self.state = "CHUNK_LENGTH"
                    pos += 2
                elif (
                    state == "CHUNK_LENGTH"
                    and not self._buffer
                    and (eol := data.find(b"\r\n", pos, pos + _MAX_LINE)) > pos
                    and not data[pos:eol].translate(None, _HEX)
                ):
                    # A whole size line of hex digits only (no extension):
                    # what the stock code makes of it, without its per-digit
                    # check. Anything else (an extension, a bad or partial
                    # line) goes to the stock code below.
                    self.length = int(data[pos:eol], 16)
                    self.state = "BODY" if self.length else "TRAILER"
                    pos = eol + 2
                elif state in ("CHUNK_LENGTH", "CRLF"):
                    # Up to and including the next LF: the stock code parses (or
                    # rejects) the size line or CRLF and leaves its buffer empty;
                    # it calls no callback here.
                    lf = data.find(b"\n", pos)
                    stop = end if lf == -1 else lf + 1
                    feed(view[pos:stop])  # type: ignore[arg-type]  # typed bytes; appends to a bytearray
                    pos = stop
                else:  # BODY with a partial buffer, TRAILER, FINISHED: stock.
                    pieces, ready = [], pieces
                    self._deliver(ready)
                    feed(view[pos:])  # type: ignore[arg-type]  # typed bytes; appends to a bytearray
                    return
        finally:
            # Also when the framing turned out broken: what came before it
            # is delivered first, as the stock decoder does.
            self._deliver(pieces)
