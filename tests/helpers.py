# mypy: disable-error-code="arg-type,assignment,dict-item,union-attr"
"""Helpers for the integration tests: a real server on 127.0.0.1:0 in this
process (on the global reactor), real clients (curl subprocesses and treq).

Nothing here blocks the reactor: processes are spawned with
``reactor.spawnProcess`` and waited for with Deferreds, and state is polled
with short deadlines instead of sleeps.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import treq
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import ProcessProtocol

from pipeserver.ops import tap

CURL = "curl"
# Note: curl 7.88 ignores --limit-rate when it writes to a pipe; a
# rate-limited curl must write to a file (-o).
#: Every curl gets these: quiet but errors shown, output unbuffered (-N), no proxy.
CURL_BASE = ["curl", "-sS", "-N", "--noproxy", "*"]

#: Exit code of curl for "transfer closed with outstanding read data remaining".
CURL_PARTIAL_FILE = 18


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_file(path: str, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; return their sha256."""
    import random

    rnd = random.Random(seed)
    digest = hashlib.sha256()
    block = rnd.randbytes(min(size, 1 << 20)) if size else b""
    with open(path, "wb") as f:
        left = size
        i = 0
        while left:
            # Vary each MiB so a reordering of blocks would be caught.
            chunk = block[: min(left, len(block))]
            chunk = i.to_bytes(8, "big") + chunk[8:] if len(chunk) >= 8 else chunk
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            i += 1
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- waiting


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
):
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        yield sleep(interval)


def has_received(proc: "Proc", nbytes: int, timeout: float = 10.0) -> defer.Deferred:
    """Fires once ``proc`` has written ``nbytes`` to its stdout."""
    return wait_for(
        lambda: proc.nbytes >= nbytes, timeout, what=f"{nbytes} bytes from {proc.name}"
    )


def file_has(path: str, nbytes: int, timeout: float = 10.0) -> defer.Deferred:
    """Fires once the file at ``path`` holds ``nbytes``."""

    def size() -> int:
        try:
            return os.path.getsize(path)
        except FileNotFoundError:
            return 0

    return wait_for(lambda: size() >= nbytes, timeout, what=f"{nbytes} bytes in {path}")


def with_timeout(d: defer.Deferred, seconds: float, what: str = "result") -> defer.Deferred:
    """``d``, failing with an AssertionError if it takes longer than ``seconds``."""

    def timed_out(failure):
        failure.trap(defer.TimeoutError)
        raise AssertionError(f"timed out after {seconds}s waiting for {what}")

    return d.addTimeout(seconds, reactor).addErrback(timed_out)


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    site: Any
    port: Any
    #: What tap.makeServer wired together (a PipeService takes it).
    wiring: Any = None

    @property
    def registry(self):
        return self.site.registry

    @property
    def portnum(self) -> int:
        return self.port.getHost().port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.portnum}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}{path}"

    def pipe(self, path: str):
        """The pipe on ``path`` (any project), or None."""
        raw = path.split("?")[0].encode()
        for key, pipe in list(self.registry.pipes.items()):
            if key[1] == raw:
                return pipe
        return None

    def wait_sender(self, path: str, timeout: float = 10.0) -> defer.Deferred:
        return wait_for(
            lambda: (p := self.pipe(path)) is not None and p.sender is not None,
            timeout,
            what=f"a sender waiting on {path}",
        )

    def wait_receivers(self, path: str, count: int, timeout: float = 10.0) -> defer.Deferred:
        return wait_for(
            lambda: (p := self.pipe(path)) is not None and len(p.receivers) == count,
            timeout,
            what=f"{count} receiver(s) on {path}",
        )

    def wait_gone(self, path: str, timeout: float = 10.0) -> defer.Deferred:
        return wait_for(
            lambda: self.pipe(path) is None, timeout, what=f"the pipe on {path} to go"
        )

    def wait_empty(self, timeout: float = 5.0) -> defer.Deferred:
        return wait_for(
            lambda: not self.registry.pipes and not self.registry.queues,
            timeout,
            what="an empty registry",
        )


def start_server(*args: str) -> Server:
    options = tap.Options()
    options.parseOptions(list(args))
    wiring = tap.makeServer(options, reactor)
    port = reactor.listenTCP(0, wiring.site, interface="127.0.0.1")
    return Server(wiring.site, port, wiring)


# ---------------------------------------------------------------- processes


class Proc(ProcessProtocol):
    """A child process: its stdout hashed (and kept, unless ``keep`` is False),
    its stderr kept, and ``ended`` firing with itself when it exits."""

    def __init__(self, name: str, keep: bool = True, group: bool = False) -> None:
        self.name = name
        self.keep = keep
        #: Runs in its own process group (under setsid); kill() kills the group.
        self.group = group
        self.out = bytearray()
        self.err = bytearray()
        self.nbytes = 0
        self._sha = hashlib.sha256()
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.finished = False
        self.ended: defer.Deferred = defer.Deferred()
        self.pid: Optional[int] = None

    # ProcessProtocol
    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def outReceived(self, data: bytes) -> None:
        self.nbytes += len(data)
        self._sha.update(data)
        if self.keep:
            self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.exit_code = reason.value.exitCode
        self.signal = reason.value.signal
        self.finished = True
        self.ended.callback(self)

    # use
    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace")

    def lines(self) -> List[str]:
        return self.text.splitlines()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.pid is None:
            return
        try:
            if self.group:
                # Also after the leader exited: its children may hold our pipes.
                os.killpg(self.pid, sig)
            elif not self.finished:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float = 30.0) -> defer.Deferred:
        """Fires with self once the process has exited."""
        if self.finished:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()

        def done(result):
            if not d.called:
                d.callback(result)
            return result

        self.ended.addBoth(done)
        return with_timeout(d, timeout, f"{self.name} to exit")

    def describe(self) -> str:
        return (
            f"{self.name}: exit={self.exit_code} signal={self.signal} "
            f"stdout={bytes(self.out[:2000])!r} stderr={bytes(self.err[:2000])!r}"
        )


StdinSpec = Union[None, str, int, "Proc"]


class Procs:
    """Spawns processes and kills whatever is left at teardown."""

    def __init__(self) -> None:
        self.all: List[Proc] = []
        self._env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        }

    def spawn(
        self,
        argv: Sequence[str],
        stdin: StdinSpec = None,
        name: Optional[str] = None,
        keep: bool = True,
    ) -> Proc:
        """Run ``argv``; stdin is /dev/null (None), a file path (str), or an
        open fd (int, closed here once the child has it)."""
        proc = Proc(name or os.path.basename(argv[0]), keep=keep)
        close_fd: Optional[int] = None
        if stdin is None:
            close_fd = os.open(os.devnull, os.O_RDONLY)
        elif isinstance(stdin, str):
            close_fd = os.open(stdin, os.O_RDONLY)
        else:
            close_fd = stdin
        try:
            reactor.spawnProcess(
                proc,
                argv[0],
                list(argv),
                env=self._env,
                childFDs={0: close_fd, 1: "r", 2: "r"},
            )
        finally:
            os.close(close_fd)
        self.all.append(proc)
        return proc

    def pipeline(
        self, producer: Sequence[str], consumer: Sequence[str], keep: bool = True
    ) -> Tuple[Proc, Proc]:
        """``producer | consumer`` as two processes, each killable on its own.
        The producer's stdout goes to the consumer's stdin only; it runs in a
        process group of its own, so killing it kills what it started."""
        r, w = os.pipe()
        gen = Proc(os.path.basename(producer[0]) + " (producer)", group=True)
        try:
            # Not a group leader, so setsid(1) execs in place: same pid.
            reactor.spawnProcess(
                gen,
                "setsid",
                ["setsid", *producer],
                env=self._env,
                childFDs={0: "w", 1: w, 2: "r"},
            )
        finally:
            os.close(w)
        self.all.append(gen)
        return gen, self.spawn(consumer, stdin=r, keep=keep)

    def cleanup(self) -> List[str]:
        """Kill what still runs; return descriptions of those killed."""
        left = []
        for proc in self.all:
            if not proc.finished:
                left.append(proc.name)
            proc.kill()
        return left


def curl(*args: str) -> List[str]:
    return [*CURL_BASE, *args]


# A producer that writes file $1, then waits for file $2 to exist (the test
# opens the gate), then writes file $3 (optional) and ends. With $4 = "trickle"
# it writes one "." every 20 ms while it waits: curl reads its stdin with a
# blocking read(), so a silent stdin would also keep curl from seeing anything
# the server says or does meanwhile.
GATED = (
    'cat "$1"; while [ ! -e "$2" ]; do if [ -n "$4" ]; then printf .; fi; sleep 0.02; done; '
    'if [ -n "$3" ]; then cat "$3"; fi'
)


def gated(first: str, gate: str, rest: str = "", trickle: bool = False) -> List[str]:
    return ["sh", "-c", GATED, "sh", first, gate, rest, "trickle" if trickle else ""]


def trickled(data: bytes, first: bytes, rest: bytes) -> bool:
    """Is ``data`` what a trickling gated producer wrote: first, dots, rest?"""
    if not (data.startswith(first) and data.endswith(rest)):
        return False
    middle = data[len(first) : len(data) - len(rest)]
    return middle == b"." * len(middle)


def open_gate(gate: str) -> None:
    with open(gate, "w"):
        pass


# ---------------------------------------------------------------- responses


def split_response(raw: bytes) -> Tuple[str, List[Tuple[str, str]], bytes]:
    """Split ``curl -D -`` output (one response) into status line, header
    list (in wire order) and body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {raw[:500]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return lines[0], headers, body


def header_values(headers: List[Tuple[str, str]], name: str) -> List[str]:
    return [v for n, v in headers if n.lower() == name.lower()]


@dataclass
class Reply:
    code: int
    headers: Dict[str, List[str]]
    body: bytes
    raw_headers: List[Tuple[str, str]] = field(default_factory=list)

    def one(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        if values is None:
            return None
        assert len(values) == 1, (name, values)
        return values[0]


@defer.inlineCallbacks
def http(method: str, url: str, data: Optional[bytes] = None, headers=None, timeout=10.0):
    """One treq request on a fresh connection; returns a :class:`Reply`."""
    response = yield with_timeout(
        treq.request(
            method,
            url,
            data=data,
            headers=headers or {},
            persistent=False,
        ),
        timeout,
        f"{method} {url}",
    )
    body = yield with_timeout(treq.content(response), timeout, f"body of {method} {url}")
    raw = []
    hdrs: Dict[str, List[str]] = {}
    for name, values in response.headers.getAllRawHeaders():
        for value in values:
            n = name.decode("latin-1")
            v = value.decode("latin-1")
            raw.append((n, v))
            hdrs.setdefault(n.lower(), []).append(v)
    return Reply(response.code, hdrs, body, raw)


# ---------------------------------------------------------------- this process


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_files_for_writing() -> Dict[int, str]:
    """Regular files (or deleted temp files) this process has open for writing."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            with open(f"/proc/self/fdinfo/{name}") as f:
                info = f.read()
        except OSError:
            continue
        if not target.startswith("/"):
            continue  # socket:[..], pipe:[..], anon_inode:..
        flags = 0
        for line in info.splitlines():
            if line.startswith("flags:"):
                flags = int(line.split()[1], 8)
        if flags & (os.O_WRONLY | os.O_RDWR) or "(deleted)" in target:
            if target.startswith("/dev/") and not target.startswith("/dev/shm"):
                continue
            found[fd] = target
    return found


def stalled_receiver(host: str, port: int, path: str) -> socket.socket:
    """A raw client that sends a GET and then never reads its socket."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    return s


def reset_close(s: socket.socket) -> None:
    """Close with a RST, like a killed client with unread data."""
    import struct

    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
