"""When a pipe becomes established, the sender hears of it first (issue 10:
piping-server's "multiple X-Piping" test waits for the sender's response
before it looks at the receiver's, which had already ended, and timed out).

The server runs in this process, on the reactor the test runs on, so the
test can look at the client sockets between two turns of the reactor: it
polls on every turn (``interval=0``), and the first turn after the server
handled the sender is the first look. A write the server left in a
transport's buffer goes out only on a later turn, when the socket is
reported writable; what it sent to a socket at once is already there.
"""

from __future__ import annotations

import socket
from typing import List, Optional

import pytest
import pytest_twisted

import helpers
from http_wire import parse_responses


class RawSocket:
    """A plain non-blocking client socket (never blocks the reactor)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.data = bytearray()
        self.eof = False

    def send(self, data: bytes) -> None:
        # Small, on loopback: the kernel takes it at once.
        assert self.sock.send(data) == len(data)

    def poll(self) -> "RawSocket":
        """Take what has arrived."""
        while not self.eof:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
            self.data += data
        return self

    def close(self) -> None:
        self.sock.close()


def sender_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "X-Piping: mymetadata1\r\nX-Piping: mymetadata2\r\nX-Piping: mymetadata3\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


BODY = b"this is a content"


@pytest.mark.parametrize("first_part", [b"", b"this is", BODY], ids=["head", "part", "whole"])
@pytest.mark.parametrize("receivers", [1, 3])
@pytest_twisted.inlineCallbacks
def test_sender_hears_of_the_pipe_before_its_receivers(server, receivers: int, first_part: bytes):
    """Receivers wait first; then the sender sends its head and none, some or
    all of its body, and (as piping-server's test does) waits for its own
    response before it sends the rest."""
    path = "/mydataid" + (f"?n={receivers}" if receivers > 1 else "")
    clients: List[RawSocket] = []
    try:
        gets = [RawSocket(server.portnum) for _ in range(receivers)]
        clients += gets
        for get in gets:
            get.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        yield server.wait_receivers("/mydataid", receivers)
        post = RawSocket(server.portnum)
        clients.append(post)
        post.send(sender_head(path, len(BODY)) + first_part)

        sender_had: Optional[bytes] = None

        def a_receiver_heard() -> bool:
            nonlocal sender_had
            if any(get.poll().data for get in gets):
                sender_had = bytes(post.poll().data)
                return True
            return False

        yield helpers.wait_for(a_receiver_heard, 10, interval=0, what="a receiver's response")
        # When the first receiver's bytes are there, so are the sender's
        # status line and its lines up to "Start sending".
        assert sender_had is not None
        head, _, lines = sender_had.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), sender_had
        start = f"[INFO] Start sending to {receivers} receiver(s)!\n".encode()
        assert start in lines, sender_had

        if first_part != BODY:
            post.send(BODY[len(first_part) :])
        for client in clients:
            yield helpers.wait_for(lambda: client.poll().eof, 10, what="the server to close")
        for get in gets:
            (response,) = parse_responses(bytes(get.data))
            assert (response.status, response.body, response.complete) == (200, BODY, True)
            assert response.headerValues(b"x-piping") == [
                b"mymetadata1", b"mymetadata2", b"mymetadata3",
            ]
        (response,) = parse_responses(bytes(post.data))
        assert response.complete
        assert response.lines == [
            f"[INFO] Waiting for {receivers} receiver(s)...",
            f"[INFO] {receivers} receiver(s) has/have been connected.",
            f"[INFO] Start sending to {receivers} receiver(s)!",
            "[INFO] Sent successfully!",
            "[INFO] All receiver(s) was/were received successfully.",
        ]
    finally:
        for client in clients:
            client.close()
