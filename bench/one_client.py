#!/usr/bin/env python3
"""What one hostile client can make the server hold, over HTTP/1.1 and h2c.

    .venv/bin/python bench/one_client.py               # every move, both protocols
    .venv/bin/python bench/one_client.py --only h2-reset,h1-connections

For each move, a fresh server (this checkout, the defaults: ``twistd pipe``'s
options with nothing but ``--listen``) runs in a child process; one client
(127.0.0.1, raw sockets and raw HTTP/2 frames from this process) does its
worst, and the server reports what it holds, from inside: its resident memory
(RSS), ``registry.bytesHeld()``, what its connections queue (HTTP/2 streams'
queues and transports' buffers, the per-client ledger), its connections,
HTTP/2 streams, parties, timers (delayed calls), file descriptors and CPU
time. Each figure is printed against the same server before the move
(``+``: the growth), and while the move holds. A bystander on 127.0.0.2
fetches ``/version`` meanwhile (its slowest time is printed), and moves a
pipe after the move (``ok`` if its bytes arrived).

Moves (``h1-`` and ``h2-`` prefixed; not every move has an HTTP/1.1 form):

* ``connections``: 1,300 idle connections (h2: preface and SETTINGS sent).
* ``parties``: 1,300 GETs that wait for a sender (h2: 100 streams a connection).
* ``senders``: 700 PUTs that wait for receivers, sending what they may.
* ``unended``: GETs whose body never ends (HTTP/1.1: one a connection;
  h2: 100 streams a connection, as many as the streams budget lets in).
* ``deaf``: pages asked for and never read: HTTP/1.1 pipelines 40
  ``/noscript`` pages with a 15 KB path per connection; h2 opens no window
  (SETTINGS_INITIAL_WINDOW_SIZE 0) and asks for 100 a connection. 200
  connections.
* ``deaf-pipes``: 300 pipes whose one receiver reads nothing (h2: window
  0) while their sender pushes 4 MiB each (over HTTP/1.1 the kernels' socket
  buffers take most of it, and those pipes end; the server keeps the rest).
* ``slow-headers``: 1,300 connections, each with a 15 KB header block
  that never ends (h2: HEADERS without END_HEADERS).
* ``continuation``: CONTINUATION frames of 1 KiB, and empty ones, on
  connection after connection for 5 s.
* ``settings``, ``ping``: SETTINGS (or PING) floods, connection after
  connection, for 5 s.
* ``reset``: rapid reset (HEADERS + RST_STREAM), connection after
  connection, for 5 s.

The machine this runs on is shared: say how loaded it was with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
KiB = 1 << 10
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ME, OTHER = "127.0.0.1", "127.0.0.2"


# ---------------------------------------------------------------- the server (child process)


def serve(port: int, statport: int) -> None:
    """(In the child.) pipeserver with the defaults on ``port``, and its
    figures, as one JSON object, to whoever connects to ``statport``."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from pipeserver.http2 import connection as http2
    from pipeserver.ops import tap
    from pipeserver.http.fastpath import buffered_bytes

    options = tap.Options()
    options.parseOptions(["--listen", f"tcp:{port}:interface=127.0.0.1"])
    service = tap.makeService(options, reactor)
    service.startService()
    server = service.server  # type: ignore[attr-defined]

    def figures() -> Dict[str, Any]:
        channels = list(server.site.channels)
        h2 = [c for c in channels if isinstance(c, http2.H2Channel)]
        rss = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * KiB
        times = os.times()
        return {
            "rss": rss,
            "bytes_held": server.registry.bytesHeld(),
            "h2_queued": sum(s.queued for c in h2 for s in c.streams.values()),
            "buffered": sum(buffered_bytes(getattr(c, "transport", None)) for c in channels),
            "ledger": server.site.channels.queuedFor(ME),
            "connections": len(channels),
            "h2_connections": len(h2),
            "streams": sum(len(c.streams) for c in h2),
            "parties": server.registry.partiesByClient.get(ME, 0),
            "pipes": len(server.registry.pipes),
            "timers": len(reactor.getDelayedCalls()),
            "fds": len(os.listdir("/proc/self/fd")),
            "cpu": times.user + times.system,
        }

    class Figures(Protocol):
        def connectionMade(self) -> None:
            self.transport.write(json.dumps(figures()).encode())
            self.transport.loseConnection()

    reactor.listenTCP(statport, Factory.forProtocol(Figures), interface="127.0.0.1")
    reactor.run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A pipeserver child process and its figures."""

    def __init__(self) -> None:
        self.port, self.statport = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port), str(self.statport)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.figures()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.1)
        # Load what the moves use, so the baseline has it: a page, a pipe, h2.
        Bystander(self).version(ME)
        http1(self.port, b"GET /noscript HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", read=True)
        c = H2(self.port)
        c.request(1, "/version")
        c.read(0.5)
        c.close()
        Bystander(self).pipe(ME)

    def figures(self) -> Dict[str, Any]:
        with socket.create_connection(("127.0.0.1", self.statport), timeout=30) as s:
            data = b""
            while True:
                got = s.recv(65536)
                if not got:
                    return json.loads(data)
                data += got

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- clients


def connect(port: int, source: str = ME, timeout: float = 5.0) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def http1(port: int, data: bytes, read: bool = False, source: str = ME) -> bytes:
    s = connect(port, source)
    s.sendall(data)
    out = b""
    if read:
        while True:
            got = s.recv(65536)
            if not got:
                break
            out += got
    s.close()
    return out


def send_quietly(s: socket.socket, data: bytes) -> bool:
    """Send what the kernel takes now; False once the peer is gone."""
    try:
        s.setblocking(False)
        try:
            s.send(data)
        except BlockingIOError:
            pass
        return True
    except OSError:
        return False
    finally:
        s.settimeout(5.0)


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">L", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">L", sid) + payload


DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


class H2:
    """A raw h2c connection: preface, our SETTINGS and an ACK of the
    server's (sent at once: the server sent its SETTINGS on accepting)."""

    def __init__(self, port: int, settings: Optional[Dict[int, int]] = None, source: str = ME) -> None:
        from hpack import Encoder

        self.sock = connect(port, source)
        self.encoder = Encoder()
        payload = b"".join(struct.pack(">HL", k, v) for k, v in (settings or {}).items())
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, payload) + frame(SETTINGS, ACK, 0))
        self.goaway: Optional[int] = None
        self.closed = False
        self.buffer = b""
        self.statuses: Dict[int, int] = {}
        self.resets: Dict[int, int] = {}

    def block(self, path: str, method: str = "GET", extra=()) -> bytes:
        return self.encoder.encode(
            [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path),
             *extra],
            huffman=False,
        )

    def request(self, sid: int, path: str, method: str = "GET", end_stream: bool = True) -> bytes:
        data = frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, self.block(path, method))
        self.send(data)
        return data

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def read(self, timeout: float) -> None:
        """Read what comes for ``timeout`` seconds (or until closed)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                got = self.sock.recv(1 << 20)
            except socket.timeout:
                return
            except OSError:
                got = b""
            if not got:
                self.closed = True
                break
            self.buffer += got
            self._frames()
        self.sock.settimeout(5.0)

    def _frames(self) -> None:
        from hpack import Decoder

        decoder = getattr(self, "decoder", None) or Decoder()
        self.decoder = decoder
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                return
            kind, flags = self.buffer[3], self.buffer[4]
            sid = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            payload, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
            if kind == GOAWAY:
                self.goaway = int.from_bytes(payload[4:8], "big")
            elif kind == RST:
                self.resets[sid] = int.from_bytes(payload[:4], "big")
            elif kind == HEADERS:
                try:
                    fields = {str(k): v for k, v in decoder.decode(payload)}
                    if ":status" in fields:
                        self.statuses[sid] = int(fields[":status"])
                except Exception:
                    pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Bystander:
    """Another client (127.0.0.2): how long a ``GET /version`` takes while
    the move holds, and whether a pipe still moves."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.slowest = 0.0
        self.failed = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def version(self, source: str = OTHER) -> float:
        started = time.monotonic()
        out = http1(self.server.port, b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    read=True, source=source)
        if not out.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(out[:200])
        return time.monotonic() - started

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.slowest = max(self.slowest, self.version())
            except Exception:
                self.failed += 1

    def start(self) -> "Bystander":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def pipe(self, source: str = OTHER) -> bool:
        """A 1 MiB pipe, receiver first; True if the bytes arrived whole."""
        body = os.urandom(MiB)
        got: List[bytes] = []
        path = f"/bystander{time.monotonic_ns()}"

        def receive() -> None:
            got.append(http1(self.server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
                             read=True, source=source))

        t = threading.Thread(target=receive)
        t.start()
        time.sleep(0.3)
        http1(self.server.port, f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
              f"Connection: close\r\n\r\n".encode() + body, read=True, source=source)
        t.join(30)
        return bool(got) and got[0].endswith(body)


# ---------------------------------------------------------------- the moves
#
# Each takes the server and returns (what it holds open, a note). What it
# holds is closed after the figures are taken.

Held = List[Any]

NOSCRIPT = "/noscript?path=/" + "a" * 15000


def h1_connections(server: Server):
    socks = []
    for i in range(1300):
        try:
            socks.append(connect(server.port))
        except OSError:
            break
    time.sleep(1)
    alive = sum(1 for s in socks if send_quietly(s, b"") and not closed(s))
    return socks, f"1,300 opened, {alive} still open"


def closed(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.settimeout(5.0)


#: New HTTP/2 connections a second, past the first 40: each costs two
#: control frames (its SETTINGS and the ACK of ours) of its client's
#: budget (http2.BUDGETS["control"]: 100 at once, 20 a second), and a
#: client that overdraws it gets GOAWAY on every new connection.
PACE = 8.0


def paced(i: int, started: float) -> None:
    """Wait until connection ``i`` may open within the budget."""
    due = started + max(0, i - 40) / PACE
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def h2_connections(server: Server):
    conns = []
    started = time.monotonic()
    for i in range(1300):
        paced(i, started)
        try:
            conns.append(H2(server.port))
        except OSError:
            break
    time.sleep(1)
    alive = sum(1 for c in conns if not closed(c.sock))
    return conns, f"1,300 opened ({PACE:g} a second past the first 40), {alive} still open"


def h1_parties(server: Server):
    socks = []
    for i in range(1300):
        try:
            s = connect(server.port)
            s.sendall(f"GET /party{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(s)
        except OSError:
            break
    time.sleep(2)
    refused = sum(1 for s in socks if peek(s).startswith(b"HTTP/1.1 503"))
    return socks, f"{len(socks)} GETs, {refused} got 503"


def peek(s: socket.socket) -> bytes:
    s.setblocking(False)
    try:
        return s.recv(64, socket.MSG_PEEK)
    except OSError:
        return b""
    finally:
        s.settimeout(5.0)


def h2_parties(server: Server):
    conns = []
    for c in range(13):
        conn = H2(server.port)
        conn.send(b"".join(
            frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, conn.block(f"/party{c}-{i}"))
            for i in range(100)))
        conns.append(conn)
    time.sleep(2)
    return conns, "1,300 GET streams on 13 connections"


def h1_senders(server: Server):
    socks = []
    chunk = b"s" * (256 * KiB)
    for i in range(700):
        try:
            s = connect(server.port)
            s.sendall(f"PUT /sender{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {64 * MiB}\r\n\r\n".encode())
            socks.append(s)
        except OSError:
            break
    # Each sends what the kernels take (the server reads no body before the pipe starts).
    for _ in range(4):
        for s in socks:
            send_quietly(s, chunk)
    time.sleep(1)
    refused = sum(1 for s in socks if b" 503 " in peek(s)[:20])
    return socks, f"700 PUTs of 64 MiB, each sending what it may; {refused} got 503"


def h2_senders(server: Server):
    conns = []
    window = b"w" * 16384
    for c in range(7):
        conn = H2(server.port)
        for i in range(100):
            sid = 1 + 2 * i
            data = frame(HEADERS, END_HEADERS, sid, conn.block(f"/sender{c}-{i}", "PUT"))
            # The default window: 4 frames of 16 KiB (less one byte).
            data += b"".join(frame(DATA, 0, sid, window) for _ in range(3)) + frame(DATA, 0, sid, window[:-1])
            conn.send(data)
        conns.append(conn)
    time.sleep(2)
    return conns, "700 PUT streams on 7 connections, each sending its 64 KiB window"


def h1_unended(server: Server):
    socks = []
    for i in range(1300):
        try:
            s = connect(server.port)
            s.sendall(f"GET /version HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx".encode())
            socks.append(s)
        except OSError:
            break
    time.sleep(1)
    alive = sum(1 for s in socks if not closed(s))
    return socks, f"1,300 GETs whose body never ends; {alive} still open"


def h2_unended(server: Server):
    """GETs without END_STREAM, as many as the stream budget lets through
    in the idle timeout (60 s): 100 a connection, 190 a second."""
    conns = []
    started = time.monotonic()
    for c in range(130):
        due = started + max(0, c * 100 - 900) / 190
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        conn = H2(server.port)
        conn.send(b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * i, conn.block("/version")) for i in range(100)))
        conns.append(conn)
    time.sleep(1)
    return conns, f"130 connections of 100 GET streams that never end, in {time.monotonic() - started:.0f} s"


def h1_deaf(server: Server):
    socks = []
    request = f"GET {NOSCRIPT} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for i in range(200):
        s = connect(server.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        send_quietly(s, request * 40)
        socks.append(s)
    time.sleep(3)
    return socks, f"200 connections pipelining 40 pages each ({len(request) * 40 * 200:,} bytes sent), reading nothing"


def h2_deaf(server: Server):
    conns = []
    sent = 0
    for c in range(200):
        conn = H2(server.port, settings={4: 0})
        data = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, conn.block(NOSCRIPT))
                        for i in range(100))
        sent += len(data)
        conn.send(data)
        conns.append(conn)
    time.sleep(3)
    return conns, f"200 connections, window 0, 100 pages each ({sent:,} bytes sent, HPACK)"


def _deaf_pipes(server: Server, receiver: Callable[[int], Any]):
    receivers = [receiver(i) for i in range(300)]
    time.sleep(1)
    senders = []
    chunk = b"d" * (256 * KiB)
    for i in range(300):
        s = connect(server.port)
        s.sendall(f"PUT /deaf{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {4 * MiB}\r\n\r\n".encode())
        senders.append(s)
    for _ in range(16):
        for s in senders:
            send_quietly(s, chunk)
    time.sleep(2)
    return [r for r in receivers if r is not None] + senders


def h1_deaf_pipes(server: Server):
    def receiver(i: int):
        s = connect(server.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /deaf{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return s

    return _deaf_pipes(server, receiver), "300 pipes: a receiver that reads nothing, a sender pushing 4 MiB"


def h2_deaf_pipes(server: Server):
    conns = []

    def receiver(i: int):
        if i % 100 == 0:
            conns.append(H2(server.port, settings={4: 0}))
        conns[-1].request(1 + 2 * (i % 100), f"/deaf{i}")
        return conns[-1] if i % 100 == 0 else None

    return _deaf_pipes(server, receiver), "300 pipes: a receiver stream with window 0 (3 connections), a sender pushing 4 MiB"


def h1_slow_headers(server: Server):
    socks = []
    head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 15000
    for i in range(1300):
        try:
            s = connect(server.port)
            s.sendall(head)
            socks.append(s)
        except OSError:
            break
    time.sleep(1)
    alive = sum(1 for s in socks if not closed(s))
    return socks, f"1,300 connections with 15 KB of a head that never ends; {alive} still open"


def h2_slow_headers(server: Server):
    conns = []
    started = time.monotonic()
    for i in range(1300):
        paced(i, started)
        try:
            conn = H2(server.port)
            block = conn.block("/slow", extra=[("x-pad", "p" * 15000)])
            conn.send(frame(HEADERS, END_STREAM, 1, block))  # no END_HEADERS
            conns.append(conn)
        except OSError:
            break
    time.sleep(1)
    alive = sum(1 for c in conns if not closed(c.sock))
    return conns, (f"1,300 connections ({PACE:g} a second past the first 40) with a 15 KB HEADERS "
                   f"that never ends; {alive} still open")


def flood(server: Server, name: str, opening: Callable[[H2], bytes], batch: Callable[[H2, int], bytes],
          seconds: float = 5.0):
    """Connection after connection, batches of frames until each is
    stopped, for ``seconds``; returns a note of what was taken."""
    started = time.monotonic()
    connections = stopped = 0
    frames_sent = 0
    codes: Dict[int, int] = {}
    while time.monotonic() - started < seconds:
        try:
            conn = H2(server.port)
        except OSError:
            time.sleep(0.05)
            continue
        connections += 1
        conn.send(opening(conn))
        n = 0
        while not conn.closed and n < 2000 and time.monotonic() - started < seconds:
            data, count = batch(conn, n)
            if not conn.send(data):
                break
            frames_sent += count
            n += 1
            if n % 10 == 0:
                conn.read(0.0001)
                if conn.goaway is not None:
                    break
        conn.read(0.2)
        if conn.goaway is not None:
            stopped += 1
            codes[conn.goaway] = codes.get(conn.goaway, 0) + 1
        conn.close()
    return [], (f"{connections} connections in {seconds:g} s, {frames_sent:,} {name} frames sent; "
                f"GOAWAY codes {codes}")


def h2_continuation(server: Server):
    held, full = flood(
        server, "CONTINUATION (1 KiB)",
        lambda c: frame(HEADERS, END_STREAM, 1, c.block("/cont")),
        lambda c, n: (b"".join(frame(CONTINUATION, 0, 1, b"x" * 1024) for _ in range(50)), 50))
    held, empty = flood(
        server, "empty CONTINUATION",
        lambda c: frame(HEADERS, END_STREAM, 1, c.block("/cont")),
        lambda c, n: (frame(CONTINUATION, 0, 1) * 500, 500))
    return held, full + "; then " + empty


def h2_settings(server: Server):
    return flood(server, "SETTINGS", lambda c: b"",
                 lambda c, n: (frame(SETTINGS, 0, 0, struct.pack(">HL", 4, 65535 + n % 7)) * 100, 100))


def h2_ping(server: Server):
    return flood(server, "PING", lambda c: b"",
                 lambda c, n: (b"".join(frame(PING, 0, 0, struct.pack(">Q", n * 100 + k)) for k in range(100)), 100))


def h2_reset(server: Server):
    def batch(c: H2, n: int):
        data = b""
        for k in range(50):
            sid = 1 + 2 * (n * 50 + k)
            data += frame(HEADERS, END_HEADERS | END_STREAM, sid, c.block(f"/rr{sid}"))
            data += frame(RST, 0, sid, struct.pack(">L", 8))
        return data, 100

    return flood(server, "HEADERS+RST_STREAM", lambda c: b"", batch)


MOVES: Dict[str, Callable[[Server], Any]] = {
    "h1-connections": h1_connections,
    "h2-connections": h2_connections,
    "h1-parties": h1_parties,
    "h2-parties": h2_parties,
    "h1-senders": h1_senders,
    "h2-senders": h2_senders,
    "h1-unended": h1_unended,
    "h2-unended": h2_unended,
    "h1-deaf": h1_deaf,
    "h2-deaf": h2_deaf,
    "h1-deaf-pipes": h1_deaf_pipes,
    "h2-deaf-pipes": h2_deaf_pipes,
    "h1-slow-headers": h1_slow_headers,
    "h2-slow-headers": h2_slow_headers,
    "h2-continuation": h2_continuation,
    "h2-settings": h2_settings,
    "h2-ping": h2_ping,
    "h2-reset": h2_reset,
}

SHOWN = ["rss", "bytes_held", "h2_queued", "buffered", "ledger", "connections", "streams",
         "parties", "pipes", "timers", "fds", "cpu"]


class Sampler:
    """The server's figures every quarter second while a move runs: the
    most of each."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak: Dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                figures = self.server.figures()
            except Exception:
                continue
            for k, v in figures.items():
                self.peak[k] = max(self.peak.get(k, v), v)

    def stop(self) -> Dict[str, float]:
        self._stop.set()
        self._thread.join(60)
        return self.peak


def answers(held: Held) -> str:
    """What the server answered the move's HTTP/2 connections (read after
    the figures were taken)."""
    goaways: Dict[int, int] = {}
    resets: Dict[int, int] = {}
    statuses: Dict[int, int] = {}
    conns = [h for h in held if isinstance(h, H2)]
    if not conns:
        return ""
    for conn in conns:
        conn.read(0.01)
        if conn.goaway is not None:
            goaways[conn.goaway] = goaways.get(conn.goaway, 0) + 1
        for code in conn.resets.values():
            resets[code] = resets.get(code, 0) + 1
        for status in conn.statuses.values():
            statuses[status] = statuses.get(status, 0) + 1
    return f"answers: statuses {statuses}, RST_STREAM codes {resets}, GOAWAY codes {goaways}"


def run(name: str) -> Dict[str, Any]:
    server = Server()
    try:
        before = server.figures()
        bystander = Bystander(server).start()
        sampler = Sampler(server)
        held, note = MOVES[name](server)
        during = server.figures()
        peak = sampler.stop()
        for k, v in during.items():
            peak[k] = max(peak.get(k, v), v)
        bystander.stop()
        seen = answers(held)
        for h in held:
            try:
                (h.sock if isinstance(h, H2) else h).close()
            except OSError:
                pass
        time.sleep(1)
        after_ok = Bystander(server).pipe()
        grown = {k: during[k] - before[k] for k in SHOWN}
        return {"move": name, "note": note, "answers": seen, "before": before, "during": during,
                "peak": peak, "grown": grown,
                "bystander_slowest_s": round(bystander.slowest, 3), "bystander_failed": bystander.failed,
                "bystander_pipe_after": after_ok}
    finally:
        server.stop()


def show(result: Dict[str, Any]) -> None:
    b, d, p = result["before"], result["during"], result["peak"]
    print(f"{result['move']}: {result['note']}")
    if result["answers"]:
        print(f"    {result['answers']}")
    print(f"    RSS +{(d['rss'] - b['rss']) / MiB:.1f} MiB (at most +{(p['rss'] - b['rss']) / MiB:.1f}); "
          f"bytesHeld {d['bytes_held']:,} (at most {p['bytes_held']:,}); h2 queues at most {p['h2_queued']:,}; "
          f"transport buffers at most {p['buffered']:,}; ledger at most {p['ledger']:,}")
    print(f"    now (at most): connections {d['connections']} ({p['connections']}), streams {d['streams']} "
          f"({p['streams']}), parties {d['parties']} ({p['parties']}), timers +{d['timers'] - b['timers']} "
          f"(+{p['timers'] - b['timers']}), fds {d['fds']}, server CPU +{d['cpu'] - b['cpu']:.1f} s")
    print(f"    bystander: slowest GET /version {result['bystander_slowest_s']} s, "
          f"{result['bystander_failed']} failed; its pipe after: {'ok' if result['bystander_pipe_after'] else 'FAILED'}")
    sys.stdout.flush()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated moves (default: all)")
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    names = [n for n in args.only.split(",") if n] or list(MOVES)
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} cores")
    results = []
    for name in names:
        result = run(name)
        show(result)
        results.append(result)
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
