#!/usr/bin/env python3
"""A pipe against a broker (issue 20): pipeserver, piping-server and Redis.

    .venv/bin/python bench/broker.py                 # 3 rounds, full sizes (~2 min)
    .venv/bin/python bench/broker.py --quick         # 2 rounds, smaller sizes
    .venv/bin/python bench/broker.py --only seq,pairs --systems ours,redis
    .venv/bin/python bench/broker.py --base /tmp/before   # another checkout as "base"

`make bench` runs it after bench/run.py (run.py --only broker runs it alone).
The same Python clients for every system: raw blocking sockets with keep-alive
for the two pipe servers, redis-py with hiredis for Redis (lists for 1:1 and
for messages, PUBLISH/SUBSCRIBE for fan-out). Every server is started here on
a free loopback port: ours (`twistd pipe`), piping-server 1.12.9 (npm, as
bench/run.py installs it) and Debian's `redis-server` (skipped, with a note,
when it is missing). The systems take turns run by run, row by row; medians.

Rows (docs/BENCHMARKS.md, "A pipe against a broker"):

  one     256 MiB 1 -> 1: MB/s, server CPU-s/GB, peak RSS growth
  fanout  64 MiB 1 -> 4: MB/s out, server CPU-s/GB out
  seq     2,000 x 1 KiB, one at a time: msg/s, server CPU ms per message
  pairs   16 pairs x 250 x 1 KiB at once: msg/s, server CPU ms per message
  queue   4 consumers, 2 producers on one `?queue` path (SPEC section 12):
          run only where the server has queue paths (probed), else skipped
  fanout8 64 MiB 1 -> 8 (?n=8): MB/s out, server CPU-s/GB out
  live    64 MiB 1 -> 8 readers joined to a `?live` stream (SPEC section 12),
          against fanout8 in the same run; Redis: PUBLISH/SUBSCRIBE as in
          fanout; skipped like queue where there are no service paths
  live200 a quarter of that, 1 -> 200 `?live` readers: what 200 attached
          readers cost the server in memory (peak RSS growth), MB/s out
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import gen  # noqa: E402
import run  # noqa: E402  (servers, /proc figures, table cells)

HOST = run.HOST
MiB = run.MiB
SYSTEMS = ("ours", "base", "piping", "redis")
ROWS = ("one", "fanout", "seq", "pairs", "queue", "fanout8", "live", "live200")
#: Rows that need SPEC section 12's service paths (probed with ?queue).
SERVICE_ROWS = ("queue", "live", "live200")
#: Redis values and pipe sends are cut in pieces of this size.
PIECE = 1 << 20
#: How long one row of one system may take before the bench gives up.
ROW_TIMEOUT = 300.0


def note(text: str) -> None:
    run.note(text)


def log(text: str) -> None:
    run.log(text)


# --------------------------------------------------------------- servers
class RedisServer:
    """Debian's redis-server on a free port: no persistence, and no output
    limit for subscribers (the fan-out row publishes faster than four
    Python subscribers read; with the default 32 MiB limit Redis would cut
    them, so the row shows what it holds instead: see its RSS)."""

    name = "redis"

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0

    def start(self) -> "RedisServer":
        self.port = run.free_port()
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
             "--client-output-buffer-limit", "pubsub 0 0 0", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run.wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def redis_client(port: int) -> Any:
    import redis

    return redis.Redis(host=HOST, port=port, socket_timeout=60)


def hiredis_in_use() -> bool:
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return False
    return bool(HIREDIS_AVAILABLE)


# --------------------------------------------------------------- server figures
def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far, all its threads: the scheduler's
    nanosecond count (/proc/PID/task/*/schedstat), as a message row's few
    milliseconds are too short for /proc/PID/stat's 10 ms ticks; the ticks
    where schedstat is not kept."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass  # a thread that just ended
    except OSError:
        total = 0
    return total / 1e9 if total else run.cpu_seconds(pid)


class Meter:
    """Server CPU (on-CPU time of the whole process, /proc) and peak RSS
    growth over a stretch of work. The peak is the kernel's high-water mark,
    reset at the start (``clear_refs`` 5); where that is not allowed, RSS
    sampled every 5 ms stands in."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampler: Optional[threading.Thread] = None
        self.stop_sampling = threading.Event()
        self.sampled = 0

    def __enter__(self) -> "Meter":
        self.rss0 = run.rss_bytes(self.pid)
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm = True
        except OSError:
            self.hwm = False
            self.sampled = self.rss0
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        self.cpu0 = cpu_seconds(self.pid)
        self.t0 = time.monotonic()
        return self

    def _sample(self) -> None:
        while not self.stop_sampling.wait(0.005):
            self.sampled = max(self.sampled, run.rss_bytes(self.pid))

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self.t0
        self.cpu = cpu_seconds(self.pid) - self.cpu0
        if self.hwm:
            peak = hwm_bytes(self.pid)
        else:
            self.stop_sampling.set()
            assert self.sampler is not None
            self.sampler.join()
            peak = self.sampled
        self.rss_growth_mib = max(0, peak - self.rss0) / MiB


def hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------- HTTP/1.1 client
class Conn:
    """One keep-alive HTTP/1.1 connection on a blocking socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def head(self) -> Tuple[int, Dict[bytes, bytes]]:
        """The next response's status and (lower-case) headers."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[:end + 4]
        status = int(lines[0].split(b" ", 2)[1])
        headers: Dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            return self.head()
        return status, headers

    def body(self, headers: Dict[bytes, bytes]) -> bytes:
        """The whole body (Content-Length or chunked)."""
        length = headers.get(b"content-length")
        if length is not None:
            n = int(length)
            while len(self.buf) < n:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            raise RuntimeError("a response without Content-Length on a keep-alive connection")
        out = bytearray()
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                self._fill()
            size = int(bytes(self.buf[:eol]).split(b";")[0], 16)
            del self.buf[:eol + 2]
            if size == 0:
                while (eol := self.buf.find(b"\r\n")) < 0:
                    self._fill()
                trailer = eol == 0
                del self.buf[:eol + 2]
                if trailer:
                    return bytes(out)
                continue  # (a trailer field: skip to the empty line)
            while len(self.buf) < size + 2:
                self._fill()
            out += self.buf[:size]
            del self.buf[:size + 2]

    def count(self, headers: Dict[bytes, bytes], digest: Any = None) -> int:
        """Read a Content-Length (or chunked) body without keeping it; its size."""
        if b"content-length" not in headers:
            return self._countChunked(digest)
        n = int(headers[b"content-length"])
        got = len(self.buf)
        if digest is not None:
            digest.update(self.buf)
        self.buf.clear()
        scratch = bytearray(1 << 20)
        view = memoryview(scratch)
        while got < n:
            k = self.sock.recv_into(scratch, min(len(scratch), n - got))
            if not k:
                raise EOFError(f"body cut at {got} of {n} bytes")
            if digest is not None:
                digest.update(view[:k])
            got += k
        return got


def _countChunkedImpl(conn: "Conn", digest: Any) -> int:
    """A chunked body's size, read into one scratch buffer (as ``count`` reads
    a counted one), so the client costs the same as for a counted body."""
    got = 0
    left = 0  # data bytes (plus their CRLF) of the current chunk still to come
    carry = bytes(conn.buf)
    conn.buf.clear()
    scratch = bytearray(1 << 20)
    view = memoryview(scratch)
    while True:
        # Skip what remains of the current chunk in ``carry``.
        if left and carry:
            take = min(left, len(carry))
            if digest is not None:
                digest.update(carry[:min(take, max(0, left - 2))])
            carry = carry[take:]
            left -= take
        if left:
            k = conn.sock.recv_into(scratch, min(len(scratch), left))
            if not k:
                raise EOFError(f"chunked body cut after {got} bytes")
            if digest is not None:
                digest.update(view[:min(k, max(0, left - 2))])
            left -= k
            continue
        eol = carry.find(b"\r\n")
        if eol < 0:
            more = conn.sock.recv(65536)
            if not more:
                raise EOFError(f"chunked body cut after {got} bytes")
            carry += more
            continue
        size = int(carry[:eol].split(b";")[0], 16)
        carry = carry[eol + 2:]
        if size == 0:
            while not carry.startswith(b"\r\n"):  # (no trailers from a pipe)
                more = conn.sock.recv(65536)
                if not more:
                    raise EOFError("chunked body cut at its end")
                carry += more
            conn.buf += carry[2:]
            return got
        got += size
        left = size + 2


Conn._countChunked = _countChunkedImpl  # type: ignore[attr-defined]


def get_head(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def put_head(path: str, length: int) -> bytes:
    return (f"PUT {path} HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n").encode()


def fresh(tag: str) -> str:
    return f"/bench-{tag}-{uuid.uuid4().hex[:12]}"


def check_sender(status: int, text: bytes, system: str) -> None:
    if status != 200 or b"[INFO] All receiver(s)" not in text:
        raise RuntimeError(f"{system}: sender got {status} {text[-200:]!r}")


def join_all(threads: List[threading.Thread], errors: List[BaseException]) -> None:
    for t in threads:
        t.join(ROW_TIMEOUT)
        if t.is_alive():
            raise RuntimeError("a client thread did not finish in time")
    if errors:
        raise errors[0]


def pipe_bulk(port: int, system: str, nbytes: int, k: int, sha: bool = False,
              live: bool = False) -> Tuple[float, int]:
    """K receivers then one sender on a fresh path; (seconds, bytes out).
    ``live``: the receivers are readers of a `?live` stream (SPEC 12)."""
    path = fresh("bulk") + ("?live" if live else f"?n={k}" if k > 1 else "")
    block = memoryview(gen.block())
    errors: List[BaseException] = []
    digests: List[str] = []
    receivers = [Conn(port) for _ in range(k)]

    def receive(conn: Conn) -> None:
        try:
            conn.send(get_head(path))
            status, headers = conn.head()
            digest = hashlib.sha256() if sha else None
            got = conn.count(headers, digest)
            if status != 200 or got != nbytes:
                raise RuntimeError(f"{system}: receiver got {status}, {got} of {nbytes} bytes")
            if digest is not None:
                digests.append(digest.hexdigest())
        except BaseException as e:  # noqa: B036 (reported by join_all)
            errors.append(e)

    threads = [threading.Thread(target=receive, args=(c,)) for c in receivers]
    for t in threads:
        t.start()
    time.sleep(0.1)  # they park first, so the clock times the transfer alone
    sender = Conn(port)
    t0 = time.monotonic()
    sender.send(put_head(path, nbytes))
    left = nbytes
    while left:
        piece = block[:min(left, len(block))]
        sender.sock.sendall(piece)
        left -= len(piece)
    status, headers = sender.head()
    text = sender.body(headers)
    if live:
        if status != 200 or f"[INFO] {k} receiver(s) got the end".encode() not in text:
            raise RuntimeError(f"{system}: live sender got {status} {text[-200:]!r}")
    else:
        check_sender(status, text, system)
    join_all(threads, errors)
    seconds = time.monotonic() - t0
    for c in receivers + [sender]:
        c.close()
    if sha and set(digests) != {gen.expected_sha256(nbytes)}:
        raise RuntimeError(f"{system}: sha256 mismatch")
    return seconds, k * nbytes


def pipe_messages(port: int, system: str, count: int, body: bytes) -> None:
    """One receiver and one sender, each on its own keep-alive connection,
    hand ``count`` bodies over one path, one after the other: the receiver's
    GET, the sender's PUT, the receiver's body, the sender's last line."""
    path = fresh("msg")
    receiver, sender = Conn(port), Conn(port)
    get, put = get_head(path), put_head(path, len(body)) + body
    try:
        for _ in range(count):
            receiver.send(get)
            sender.send(put)
            status, headers = receiver.head()
            got = receiver.body(headers)
            if status != 200 or got != body:
                raise RuntimeError(f"{system}: receiver got {status}, {len(got)} bytes")
            status, headers = sender.head()
            check_sender(status, sender.body(headers), system)
    finally:
        receiver.close()
        sender.close()


def redis_messages(port: int, count: int, body: bytes) -> None:
    """The same hand-over through Redis lists: the producer RPUSHes, the
    consumer BLPOPs and RPUSHes an acknowledgement, which the producer
    BLPOPs (what the pipe's sender learns from its last line)."""
    key = uuid.uuid4().hex
    jobs, acks = f"jobs-{key}", f"acks-{key}"
    producer, consumer = redis_client(port), redis_client(port)
    try:
        for _ in range(count):
            producer.rpush(jobs, body)
            got = consumer.blpop([jobs], timeout=60)
            if got is None or got[1] != body:
                raise RuntimeError("redis: the consumer got no message")
            consumer.rpush(acks, b"1")
            if producer.blpop([acks], timeout=60) is None:
                raise RuntimeError("redis: the producer got no acknowledgement")
    finally:
        producer.close()
        consumer.close()


def redis_one(port: int, nbytes: int, sha: bool = False) -> Tuple[float, int]:
    """256 MiB through a list, in values of PIECE bytes."""
    key = f"bulk-{uuid.uuid4().hex}"
    block = gen.block()
    errors: List[BaseException] = []
    result: Dict[str, str] = {}
    consumer = redis_client(port)

    def consume() -> None:
        try:
            digest = hashlib.sha256() if sha else None
            got = 0
            while got < nbytes:
                item = consumer.blpop([key], timeout=60)
                if item is None:
                    raise RuntimeError(f"redis: consumer starved at {got} of {nbytes}")
                got += len(item[1])
                if digest is not None:
                    digest.update(item[1])
            if digest is not None:
                result["sha"] = digest.hexdigest()
        except BaseException as e:  # noqa: B036
            errors.append(e)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.05)
    producer = redis_client(port)
    t0 = time.monotonic()
    left = nbytes
    while left:
        piece = block[:min(left, PIECE)]
        producer.rpush(key, piece)
        left -= len(piece)
    join_all([thread], errors)
    seconds = time.monotonic() - t0
    producer.close()
    consumer.close()
    if sha and result.get("sha") != gen.expected_sha256(nbytes):
        raise RuntimeError("redis: sha256 mismatch")
    return seconds, nbytes


def redis_fanout(port: int, nbytes: int, k: int) -> Tuple[float, int]:
    """PUBLISH in PIECE-byte messages to K subscribers."""
    channel = f"fan-{uuid.uuid4().hex}"
    block = gen.block()
    errors: List[BaseException] = []
    subs = []
    for _ in range(k):
        ps = redis_client(port).pubsub(ignore_subscribe_messages=True)
        ps.subscribe(channel)
        subs.append(ps)
    publisher = redis_client(port)
    deadline = time.monotonic() + 10
    while publisher.pubsub_numsub(channel)[0][1] < k:
        if time.monotonic() > deadline:
            raise RuntimeError("redis: subscribers never subscribed")
        time.sleep(0.01)

    def consume(ps: Any) -> None:
        try:
            got = 0
            while got < nbytes:
                message = ps.get_message(timeout=60)
                if message is None:
                    continue
                got += len(message["data"])
        except BaseException as e:  # noqa: B036
            errors.append(e)

    threads = [threading.Thread(target=consume, args=(ps,)) for ps in subs]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    left = nbytes
    while left:
        piece = block[:min(left, PIECE)]
        if publisher.publish(channel, piece) != k:
            raise RuntimeError("redis: a subscriber is gone")
        left -= len(piece)
    join_all(threads, errors)
    seconds = time.monotonic() - t0
    for ps in subs:
        ps.close()
    publisher.close()
    return seconds, k * nbytes


# --------------------------------------------------------------- the queue row (SPEC 12)
def pipe_has_queue(port: int) -> bool:
    """Whether the server pairs two waiting receivers of one `?queue` path
    (SPEC 12) instead of refusing the second (a plain pipe with n=1)."""
    path = fresh("probe") + "?queue"
    first, second = Conn(port), Conn(port)
    try:
        first.send(get_head(path))
        time.sleep(0.05)
        second.send(get_head(path))
        second.sock.settimeout(0.5)
        try:
            status, _ = second.head()
        except (socket.timeout, EOFError):
            return True  # it waits, as a queue's receiver does
        return status == 200
    finally:
        first.close()
        second.close()


def pipe_queue(port: int, system: str, consumers: int, producers: int, each: int,
               body: bytes) -> None:
    """``producers`` senders each hand ``each`` bodies to whichever of
    ``consumers`` receivers of one `?queue` path is next; every consumer
    loops GET until all are delivered, then the waiting ones are closed."""
    path = fresh("queue") + "?queue"
    total = producers * each
    delivered = [0]
    lock = threading.Lock()
    done = threading.Event()
    errors: List[BaseException] = []
    conns = [Conn(port) for _ in range(consumers)]

    def consume(conn: Conn) -> None:
        try:
            while not done.is_set():
                conn.send(get_head(path))
                status, headers = conn.head()
                got = conn.body(headers)
                if status != 200 or got != body:
                    raise RuntimeError(f"{system}: queue receiver got {status}")
                with lock:
                    delivered[0] += 1
                    if delivered[0] == total:
                        done.set()
        except (EOFError, OSError):
            if not done.is_set():
                errors.append(RuntimeError(f"{system}: a queue receiver was cut"))
        except BaseException as e:  # noqa: B036
            errors.append(e)

    def produce() -> None:
        sender = Conn(port)
        try:
            put = put_head(path, len(body)) + body
            for _ in range(each):
                sender.send(put)
                status, headers = sender.head()
                check_sender(status, sender.body(headers), system)
        except BaseException as e:  # noqa: B036
            errors.append(e)
        finally:
            sender.close()

    workers = [threading.Thread(target=consume, args=(c,)) for c in conns]
    senders = [threading.Thread(target=produce) for _ in range(producers)]
    for t in workers + senders:
        t.start()
    join_all(senders, errors)
    done.wait(ROW_TIMEOUT)
    for c in conns:  # the consumers parked on the next GET
        c.sock.shutdown(socket.SHUT_RDWR)
    join_all(workers, errors)
    for c in conns:
        c.close()
    if delivered[0] != total:
        raise RuntimeError(f"{system}: {delivered[0]} of {total} queue messages delivered")


def redis_queue(port: int, consumers: int, producers: int, each: int, body: bytes) -> None:
    """The same through one list: producers RPUSH (their id first), consumers
    BLPOP and acknowledge on the producer's own list."""
    key = uuid.uuid4().hex
    jobs = f"q-{key}"
    total = producers * each
    errors: List[BaseException] = []
    done = threading.Event()
    delivered = [0]
    lock = threading.Lock()

    def consume() -> None:
        client = redis_client(port)
        try:
            while not done.is_set():
                item = client.blpop([jobs], timeout=0.2)
                if item is None:
                    continue
                who, got = item[1][:8], item[1][8:]
                if got != body:
                    raise RuntimeError("redis: a queue message was damaged")
                client.rpush(f"ack-{key}-{int(who)}", b"1")
                with lock:
                    delivered[0] += 1
                    if delivered[0] == total:
                        done.set()
        except BaseException as e:  # noqa: B036
            errors.append(e)
        finally:
            client.close()

    def produce(i: int) -> None:
        client = redis_client(port)
        try:
            message = b"%08d" % i + body
            for _ in range(each):
                client.rpush(jobs, message)
                if client.blpop([f"ack-{key}-{i}"], timeout=60) is None:
                    raise RuntimeError("redis: no acknowledgement")
        except BaseException as e:  # noqa: B036
            errors.append(e)
        finally:
            client.close()

    workers = [threading.Thread(target=consume) for _ in range(consumers)]
    senders = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    for t in workers + senders:
        t.start()
    join_all(senders, errors)
    done.wait(ROW_TIMEOUT)
    done.set()
    join_all(workers, errors)
    if delivered[0] != total:
        raise RuntimeError(f"redis: {delivered[0]} of {total} queue messages delivered")


# --------------------------------------------------------------- rows
class System:
    """One system under test: how to run each row against it."""

    def __init__(self, name: str, server: Any) -> None:
        self.name = name
        self.server = server
        self.is_redis = isinstance(server, RedisServer)
        self.has_queue = False

    @property
    def port(self) -> int:
        return int(self.server.port)

    def bulk(self, nbytes: int, k: int, sha: bool = False, live: bool = False
             ) -> Tuple[float, int]:
        if self.is_redis:
            return redis_one(self.port, nbytes, sha) if k == 1 else \
                redis_fanout(self.port, nbytes, k)
        return pipe_bulk(self.port, self.name, nbytes, k, sha, live)

    def messages(self, pairs: int, each: int, body: bytes) -> None:
        errors: List[BaseException] = []

        def one() -> None:
            try:
                if self.is_redis:
                    redis_messages(self.port, each, body)
                else:
                    pipe_messages(self.port, self.name, each, body)
            except BaseException as e:  # noqa: B036
                errors.append(e)

        if pairs == 1:
            one()
            if errors:
                raise errors[0]
            return
        threads = [threading.Thread(target=one) for _ in range(pairs)]
        for t in threads:
            t.start()
        join_all(threads, errors)

    def queue(self, consumers: int, producers: int, each: int, body: bytes) -> None:
        if self.is_redis:
            redis_queue(self.port, consumers, producers, each, body)
        else:
            pipe_queue(self.port, self.name, consumers, producers, each, body)


def measure_bulk(system: System, nbytes: int, k: int, live: bool = False) -> Dict[str, float]:
    with Meter(system.server.pid) as m:
        seconds, out = system.bulk(nbytes, k, live=live)
    return {"mbps": out / seconds / 1e6, "cpu_s_per_gb": m.cpu / (out / 1e9),
            "rss_growth_mib": m.rss_growth_mib, "seconds": seconds}


def measure_messages(system: System, pairs: int, each: int) -> Dict[str, float]:
    body = os.urandom(1024)
    with Meter(system.server.pid) as m:
        system.messages(pairs, each, body)
    n = pairs * each
    return {"msg_per_s": n / m.seconds, "cpu_ms_per_msg": m.cpu / n * 1e3,
            "rss_growth_mib": m.rss_growth_mib, "seconds": m.seconds}


def measure_queue(system: System, consumers: int, producers: int, each: int) -> Dict[str, float]:
    body = os.urandom(1024)
    with Meter(system.server.pid) as m:
        system.queue(consumers, producers, each, body)
    n = producers * each
    return {"msg_per_s": n / m.seconds, "cpu_ms_per_msg": m.cpu / n * 1e3,
            "rss_growth_mib": m.rss_growth_mib, "seconds": m.seconds}


#: row: (label, what it runs, the figures shown in the table: key, unit, digits)
def row_specs(cfg: Dict[str, Any]) -> Dict[str, Tuple[str, Callable[[System], Dict[str, float]],
                                                     List[Tuple[str, str, int]]]]:
    size, fsize = cfg["size"], cfg["fsize"]
    return {
        "one": (f"{size // MiB} MiB 1 -> 1: MB/s (server CPU-s/GB, peak RSS growth)",
                lambda s: measure_bulk(s, size, 1),
                [("mbps", "", 0), ("cpu_s_per_gb", "", 2), ("rss_growth_mib", "MiB", 1)]),
        "fanout": (f"{fsize // MiB} MiB 1 -> 4: MB/s out (server CPU-s/GB out, peak RSS growth)",
                   lambda s: measure_bulk(s, fsize, 4),
                   [("mbps", "", 0), ("cpu_s_per_gb", "", 2), ("rss_growth_mib", "MiB", 1)]),
        "seq": (f"{cfg['seq']:,} x 1 KiB, one at a time: msg/s (server CPU ms per message)",
                lambda s: measure_messages(s, 1, cfg["seq"]),
                [("msg_per_s", "", 0), ("cpu_ms_per_msg", "", 3)]),
        "pairs": (f"{cfg['pairs']} pairs x {cfg['each']} x 1 KiB: msg/s (server CPU ms per message)",
                  lambda s: measure_messages(s, cfg["pairs"], cfg["each"]),
                  [("msg_per_s", "", 0), ("cpu_ms_per_msg", "", 3)]),
        "queue": (f"queue: 4 consumers, 2 producers x {cfg['queue_each']} x 1 KiB: msg/s "
                  "(server CPU ms per message)",
                  lambda s: measure_queue(s, 4, 2, cfg["queue_each"]),
                  [("msg_per_s", "", 0), ("cpu_ms_per_msg", "", 3)]),
        "fanout8": (f"{fsize // MiB} MiB 1 -> 8 (?n=8): MB/s out (server CPU-s/GB out, "
                    "peak RSS growth)",
                    lambda s: measure_bulk(s, fsize, 8),
                    [("mbps", "", 0), ("cpu_s_per_gb", "", 2), ("rss_growth_mib", "MiB", 1)]),
        "live": (f"{fsize // MiB} MiB 1 -> 8 ?live readers: MB/s out (server CPU-s/GB out, "
                 "peak RSS growth)",
                 lambda s: measure_bulk(s, fsize, 8, live=True),
                 [("mbps", "", 0), ("cpu_s_per_gb", "", 2), ("rss_growth_mib", "MiB", 1)]),
        "live200": (f"{fsize // 4 // MiB} MiB 1 -> 200 ?live readers: MB/s out (server CPU-s/GB "
                    "out, peak RSS growth)",
                    lambda s: measure_bulk(s, fsize // 4, 200, live=True),
                    [("mbps", "", 0), ("cpu_s_per_gb", "", 2), ("rss_growth_mib", "MiB", 1)]),
    }


def cell(stats: Optional[Dict[str, Dict[str, float]]], figures: List[Tuple[str, str, int]],
         ranges: bool) -> str:
    if not stats:
        return "—"
    parts = []
    for key, unit, digits in figures:
        stat = stats[key]
        text = f"{stat['median']:,.{digits}f}"
        if ranges and stat["n"] > 1:
            text += f" [{stat['min']:,.{digits}f}–{stat['max']:,.{digits}f}]"
        if unit:
            text = ("+" if unit == "MiB" else "") + text + f" {unit}"
        parts.append(text)
    return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


def table(results: Dict[str, Dict[str, Any]], specs: Dict[str, Any], names: List[str],
          ranges: bool = False) -> str:
    labels = {"ours": "pipeserver", "base": "pipeserver (base)",
              "piping": f"piping-server {run.PIPING_VERSION}", "redis": "Redis"}
    head = ["workload"] + [labels[n] for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, (label, _, figures) in specs.items():
        if not any(row in results.get(n, {}) for n in names):
            continue
        lines.append("| " + " | ".join(
            [label] + [cell(results.get(n, {}).get(row), figures, ranges) for n in names]) + " |")
    return "\n".join(lines)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --------------------------------------------------------------- main
def config(quick: bool) -> Dict[str, Any]:
    return {
        "size": 64 * MiB if quick else 256 * MiB,
        "fsize": 16 * MiB if quick else 64 * MiB,
        "seq": 500 if quick else 2000,
        "pairs": 16,
        "each": 60 if quick else 250,
        "queue_each": 100 if quick else 500,
        "warm": 300 if quick else 1500,
    }


def start_systems(wanted: List[str], base: Optional[str]) -> List[Tuple[str, Any]]:
    """(name, a started server) for each wanted system that can run here."""
    started: List[Tuple[str, Any]] = []
    for name in wanted:
        if name in ("ours", "base"):
            root = Path(base).resolve() if name == "base" else run.ROOT
            if name == "base" and not base:
                continue
            started.append((name, run.HttpServer(name, run.ours_argv, root).start()))
        elif name == "piping":
            argv = run.ensure_piping()
            if argv:
                started.append((name, run.HttpServer(
                    name, lambda port, a=argv: a + ["--host", HOST, "--http-port", str(port)])
                    .start()))
        elif name == "redis":
            binary = shutil.which("redis-server")
            if not binary:
                note("REDIS SKIPPED: redis-server not found (Debian: apt-get install "
                     "redis-server); the broker column is empty")
                continue
            try:
                import redis  # noqa: F401
            except ImportError:
                note("REDIS SKIPPED: the redis client is not installed "
                     "(pip install -e '.[bench]', which `make bench` does)")
                continue
            if not hiredis_in_use():
                note("redis-py runs without hiredis (pip install hiredis): its client is "
                     "slower than the figures in docs/BENCHMARKS.md")
            started.append((name, RedisServer(binary).start()))
    return started


def bench(runs: int, quick: bool, wanted: List[str], only: List[str],
          base: Optional[str] = None) -> Dict[str, Any]:
    """Run the rows; the results, the table and what the machine did meanwhile."""
    cfg = config(quick)
    specs = {row: spec for row, spec in row_specs(cfg).items() if row in only}
    started = start_systems(wanted, base)
    systems = [System(name, server) for name, server in started]
    results: Dict[str, Dict[str, Any]] = {s.name: {} for s in systems}
    machine: Dict[str, Any] = {"load_before": loadavg(), "busy": {}}
    t_start = time.time()
    try:
        for s in systems:  # warm-up (Node's JIT needs ~1,000), the bytes checked once
            log(f"[broker] {s.name}: warm-up, 16 MiB sha256 check, {cfg['warm']} messages")
            s.bulk(16 * MiB, 1, sha=True)
            s.messages(1, cfg["warm"], os.urandom(1024))
            if not s.is_redis:
                s.has_queue = pipe_has_queue(s.port)
        for row, (label, fn, _) in specs.items():
            runners = [s for s in systems
                       if row not in SERVICE_ROWS or s.is_redis or s.has_queue]
            if row in SERVICE_ROWS:
                for s in systems:
                    if s not in runners:
                        note(f"{row} row: {s.name} has no service paths (SPEC 12, issue 18): "
                             "skipped")
                if not any(not s.is_redis for s in runners):
                    continue
            per: Dict[str, List[Dict[str, float]]] = {s.name: [] for s in runners}
            busy0 = run.machine_ticks()
            for i in range(runs):
                for s in runners:
                    res = fn(s)
                    log(f"  [{row}] {s.name} run {i + 1}/{runs}: " + ", ".join(
                        f"{k}={v:.3f}" for k, v in res.items()))
                    per[s.name].append(res)
            busy1 = run.machine_ticks()
            machine["busy"][row] = round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3)
            for name, done in per.items():
                results[name][row] = run.summarize(done)
    finally:
        for s in systems:
            s.server.stop()
    machine["load_after"] = loadavg()
    names = [s.name for s in systems]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - t_start, 1),
        "runs": runs, "quick": quick, "config": cfg, "machine": machine,
        "hiredis": hiredis_in_use(), "results": results,
        "table": table(results, specs, names),
        "table_ranges": table(results, specs, names, ranges=True),
    }


def report(out: Dict[str, Any]) -> str:
    m = out["machine"]
    busy = ", ".join(f"{row} {share:.0%}" for row, share in m["busy"].items())
    return (f"A pipe against a broker (issue 20): {out['runs']} runs per row, the systems "
            f"taking turns; median\n(server CPU from /proc of the server process; peak RSS "
            f"growth from VmHWM)\n\n{out['table']}\n\nmin–max:\n\n{out['table_ranges']}\n\n"
            f"machine: {os.cpu_count()} cores, load average {m['load_before']} before, "
            f"{m['load_after']} after; all cores busy during each row: {busy}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    parser.add_argument("--runs", type=int, default=None, help="runs per row (default 3, quick 2)")
    parser.add_argument("--only", default="", help="comma list of: " + ",".join(ROWS))
    parser.add_argument("--systems", default="ours,piping,redis",
                        help="comma list of: ours,piping,redis (base with --base)")
    parser.add_argument("--base", default=os.environ.get("BENCH_BASE"),
                        help="another pipeserver checkout, run as system 'base' beside 'ours'")
    parser.add_argument("--ours-option", action="append", default=[],
                        help="an extra option for twistd pipe (repeatable)")
    parser.add_argument("--json", default=None, help="where to write the JSON")
    args = parser.parse_args()
    run.OURS_OPTIONS.extend(args.ours_option)
    wanted = [s for s in args.systems.split(",") if s]
    if args.base and "base" not in wanted:
        wanted.insert(1, "base")
    only = [r for r in args.only.split(",") if r] or list(ROWS)
    runs = args.runs or (2 if args.quick else 3)
    out = bench(runs, args.quick, wanted, only, args.base)
    out["notes"] = run.NOTES
    print(report(out))
    for n in run.NOTES:
        print(f"\nnote: {n}")
    path = Path(args.json) if args.json else (
        BENCH / "results" / time.strftime("broker-%Y%m%d-%H%M%S.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
