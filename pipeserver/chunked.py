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
accepts both.
"""

from __future__ import annotations

from typing import Union

from twisted.web import http

Data = Union[bytes, memoryview]


class ViewChunkedDecoder(http._ChunkedTransferDecoder):
    def dataReceived(self, data: bytes) -> None:  # type: ignore[override]
        feed = super().dataReceived
        end = len(data)
        if not end:
            return
        view = memoryview(data)
        pos = 0
        while pos < end:
            state = self.state
            if state == "BODY" and not self._buffer:
                take = min(self.length, end - pos)
                piece: Data = data if take == end else view[pos : pos + take]
                pos += take
                self.length -= take
                if self.length == 0:
                    self.state = "CRLF"
                self.dataCallback(piece)  # type: ignore[arg-type]
            elif state in ("CHUNK_LENGTH", "CRLF"):
                # Up to and including the next LF: the stock code parses (or
                # rejects) the size line or CRLF and leaves its buffer empty.
                lf = data.find(b"\n", pos)
                stop = end if lf == -1 else lf + 1
                feed(view[pos:stop])  # type: ignore[arg-type]
                pos = stop
            else:  # BODY with a partial buffer, TRAILER, FINISHED: stock.
                feed(view[pos:])  # type: ignore[arg-type]
                return
