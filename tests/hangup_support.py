"""Parties that hang up while nothing is written to them (issue 18).

A receiver whose stream is quiet (a live log tail with nothing to say, a
plain pipe whose sender pauses) is written nothing, so only its connection
tells the server it left: a FIN, a reset, an HTTP/2 RST_STREAM. The sender
here is a raw HTTP/1.1 socket because ``curl -T -`` cannot be one: it reads
its stdin with a blocking ``read()``, and while its producer is quiet it
reads nothing of the response either (helpers.GATED), so a line the server
did send would never show up in its output.
"""

from __future__ import annotations

from typing import Any, Callable, List

from twisted.internet import defer

import helpers
from abuse_support import RawClient, chunk, connect
from helpers import curl

#: How a reader hangs up: curl killed (HTTP/1.1, HTTP/2 by prior knowledge:
#: its kernel sends a FIN); an HTTP/2 client that resets its stream and
#: keeps the connection; or an HTTP/1.1 client that sent more after its GET
#: than the server buffers (a pipelined head of :data:`UNREAD` bytes), so
#: its connection is not read, and then closes it (FIN) or resets it.
READERS = ["http1.1", "h2c", "h2-rst-stream", "http1.1-unread-fin", "http1.1-unread-rst"]
#: More than Twisted keeps behind the request in flight (16 KiB) before it
#: stops reading, little enough that the server's kernel takes the rest, so
#: the FIN behind it arrives (behind unsent bytes it would wait in the
#: client's kernel, and no server could see it).
UNREAD = 64 * 1024


class Reader:
    """A receiver of one kind (:data:`READERS`) and how it hangs up."""

    def __init__(self, got: Callable[[], bytes], hang_up: Callable[[], Any]) -> None:
        self.got = got
        self.hang_up = hang_up


@defer.inlineCallbacks
def reader(kind: str, server: helpers.Server, procs: helpers.Procs, h2clients: Any, path: str):
    """A :class:`Reader` of ``kind`` on ``path`` (its request sent)."""
    if kind.startswith("http1.1-unread"):
        raw = yield connect(server.portnum)
        raw.send(
            f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            + b"GET /next HTTP/1.1\r\nHost: x\r\nX-Pad: "
            + b"a" * UNREAD
        )
        rst = kind.endswith("rst")
        return Reader(lambda: body_so_far(raw), lambda: raw.kill(rst))
    if kind == "h2-rst-stream":
        client = yield h2clients.h2c(server.portnum)
        stream = client.get(path)
        return Reader(lambda: bytes(stream.body), stream.reset_stream)
    h2 = ["--http2-prior-knowledge"] if kind == "h2c" else []
    proc = procs.spawn(curl(*h2, "-f", server.url(path)), name=kind)
    return Reader(lambda: bytes(proc.out), proc.kill)


@defer.inlineCallbacks
def quiet_sender(port: int, path: str, first: bytes):
    """A chunked PUT of ``first`` to ``path`` that then sends nothing until
    the test says (``send(chunk(...))``); it reads every response byte."""
    client = yield connect(port)
    client.send(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunk(first)
    )
    return client


def body_so_far(client: RawClient) -> bytes:
    """The body of the response ``client`` is reading, so far."""
    if b"\r\n\r\n" not in client.data:
        return b""
    return client.response().body


def said(sender: RawClient, line: str) -> bool:
    """Whether the sender was told ``line`` (each line is a chunk of its own)."""
    return (line + "\n").encode() in sender.data


def lines(sender: RawClient) -> List[str]:
    """The sender's response so far, as lines."""
    return sender.response().text.splitlines()
