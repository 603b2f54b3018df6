#!/usr/bin/env python3
"""pipeserver benchmark suite (issue 4): ours against socat and piping-server.

    make bench                       # full run (several minutes)
    .venv/bin/python bench/run.py --quick        # or BENCH_QUICK=1: fewer runs, smaller sizes
    .venv/bin/python bench/run.py --only throughput,latency --servers ours,piping
    .venv/bin/python bench/run.py --only h2 --runs 3 --profile /tmp/prof   # HTTP/2 rows

Starts every server itself, on free loopback ports, in the same run, and prints
one table plus a JSON file (bench/results/). Baselines: socat (a plain TCP relay,
row "one-to-one" only; installed with apt-get when missing and we are root) and
piping-server 1.12.9 (npm, installed into bench/node_modules; skipped with a
note when node/npm are missing). The HTTP/2 rows (issue 12), h2tls and h2c, are
printed as a second table: ours h2 over TLS vs piping-server h2 over TLS and ours
HTTP/1.1 over TLS; ours h2c vs ours HTTP/1.1 cleartext; 256 MiB, curl at both ends;
server and client CPU s/GB. Last, "broker" (issue 20, bench/broker.py): ours,
piping-server and Redis with the same Python clients, bulk and 1 KiB messages,
printed as a third table. See docs/BENCHMARKS.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import gen  # noqa: E402

PIPING_VERSION = "1.12.9"
PIPING_DIR = BENCH / "node_modules" / "piping-server"
CLK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
GiB = 1 << 30
MiB = 1 << 20
# socat's relay copies with this buffer (its default, 8 KiB, is much slower).
SOCAT_BUFFER = 262144

NOTES: List[str] = []


def note(text: str) -> None:
    NOTES.append(text)
    print(f"# {text}", file=sys.stderr, flush=True)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------- setup
def ensure_socat() -> Optional[str]:
    path = shutil.which("socat")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing socat with apt-get ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "socat"], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        path = shutil.which("socat")
    if not path:
        note("socat not found and could not be installed: socat baseline skipped")
    return path


def ensure_piping() -> Optional[List[str]]:
    node = shutil.which("node")
    if not node:
        note("node not found: piping-server baseline skipped")
        return None
    pkg = PIPING_DIR / "package.json"
    version = None
    if pkg.exists():
        version = json.loads(pkg.read_text()).get("version")
    if version != PIPING_VERSION:
        npm = shutil.which("npm")
        if not npm:
            note("npm not found: piping-server baseline skipped")
            return None
        log(f"installing piping-server@{PIPING_VERSION} into bench/node_modules ...")
        subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund",
                        "--prefix", str(BENCH), f"piping-server@{PIPING_VERSION}"],
                       check=False, stdout=subprocess.DEVNULL)
        if not pkg.exists():
            note("npm install piping-server failed: piping-server baseline skipped")
            return None
    return [node, str(PIPING_DIR / "dist" / "src" / "index.js")]


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


# --------------------------------------------------------------- process figures
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


class HttpServer:
    """One of the two HTTP pipe servers, started fresh on a free port."""

    def __init__(self, name: str, argv_for_port: Callable[[int], List[str]],
                 root: Path = ROOT, cert: Optional[Path] = None) -> None:
        self.name = name
        self.cert = cert  # serves TLS with this certificate
        self.argv_for_port = argv_for_port
        self.root = root
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0

    def start(self) -> "HttpServer":
        self.port = free_port()
        env = dict(os.environ)
        if self.root != ROOT:  # another checkout of pipeserver, e.g. --base
            env["PYTHONPATH"] = str(self.root)
        self.proc = subprocess.Popen(
            self.argv_for_port(self.port), cwd=str(self.root), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc)
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

    def url(self, path: str) -> str:
        return f"{'https' if self.cert else 'http'}://{HOST}:{self.port}{path}"

    def __enter__(self) -> "HttpServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


_OURS_HELP: List[str] = []
OURS_OPTIONS: List[str] = []  # --ours-option


def ours_argv(port: int, listen: str = "tcp:{port}:interface={host}",
              twistd_options: Tuple[str, ...] = ()) -> List[str]:
    """twistd pipe with its default settings, except waiting-party limits
    raised (when it has them) so that row (4) can park 10,000 receivers."""
    twistd = str(Path(sys.executable).parent / "twistd")
    if not _OURS_HELP:
        _OURS_HELP.append(subprocess.run([twistd, "pipe", "--help"], cwd=str(ROOT),
                                         capture_output=True, text=True).stdout)
    argv = [twistd, "-n", "--pidfile=", *twistd_options, "pipe",
            "--listen", listen.format(port=port, host=HOST)]
    for option in ("--max-waiting", "--max-waiting-per-project"):
        if option + "=" in _OURS_HELP[0]:
            argv += [option, "1000000"]
    argv += OURS_OPTIONS
    return argv


def fresh_path(tag: str) -> str:
    return f"/bench-{tag}-{uuid.uuid4().hex[:12]}"


def wait_all(procs: List[subprocess.Popen], timeout: float) -> List[float]:
    """Wait for all processes; the monotonic time each one ended."""
    return wait_rusage(procs, timeout)[0]


# --------------------------------------------------------------- (1) and (2): curl
def curl_transfer(server: HttpServer, nbytes: int, k: int = 1, sha: bool = False) -> Dict[str, Any]:
    """One sender (gen | curl -T -) and K receivers (curl > /dev/null)."""
    path = fresh_path("tp")
    query = f"?n={k}" if k > 1 else ""
    url = server.url(path + query)
    cpu0 = cpu_seconds(server.pid)
    receivers = []
    for _ in range(k):
        if sha:
            argv = ["bash", "-c", f"set -o pipefail; curl -sS --fail '{url}' | sha256sum"]
        else:
            argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url]
        receivers.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
    time.sleep(0.3)  # let them park, so the clock measures the transfer alone
    t0 = time.monotonic()
    sender = subprocess.Popen(
        ["bash", "-c",
         f"set -o pipefail; '{sys.executable}' '{BENCH / 'gen.py'}' {nbytes} | "
         f"curl -sS --fail -T - '{url}'"],
        stdout=subprocess.PIPE,
    )
    ends = wait_all(receivers + [sender], timeout=600)
    cpu = cpu_seconds(server.pid) - cpu0
    out = sender.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
    if sender.returncode != 0 or "successfully" not in out.strip().splitlines()[-1]:
        raise RuntimeError(f"{server.name}: sender failed: {out[-300:]!r}")
    for r in receivers:
        got = r.stdout.read().decode().split()  # type: ignore[union-attr]
        if r.returncode != 0 or not got:
            raise RuntimeError(f"{server.name}: receiver failed")
        if sha:
            if got[0] != gen.expected_sha256(nbytes):
                raise RuntimeError(f"{server.name}: sha256 mismatch")
        elif int(got[0]) != nbytes:
            raise RuntimeError(f"{server.name}: got {got[0]} bytes of {nbytes}")
    elapsed = max(ends) - t0
    per = [nbytes / (end - t0) / 1e6 for end in ends[:k]]
    return {
        "mbps": k * nbytes / elapsed / 1e6,
        "per_receiver_mbps": statistics.median(per),
        "cpu_s_per_gb": cpu / (k * nbytes / 1e9),
        "seconds": elapsed,
    }


def socat_transfer(socat: str, nbytes: int, sha: bool = False) -> Dict[str, Any]:
    """gen | socat -> relay socat -> a counting (or hashing) socket reader."""
    import hashlib

    relay_port = free_port()
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)
        sink_port = listener.getsockname()[1]
        relay = subprocess.Popen(
            [socat, "-u", "-b", str(SOCAT_BUFFER),
             f"TCP-LISTEN:{relay_port},bind={HOST},reuseaddr", f"TCP:{HOST}:{sink_port}"])
        result: Dict[str, Any] = {}

        def sink() -> None:
            conn, _ = listener.accept()
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            digest = hashlib.sha256() if sha else None
            total = 0
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                total += n
                if digest is not None:
                    digest.update(view[:n])
            conn.close()
            result["bytes"] = total
            result["end"] = time.monotonic()
            result["sha"] = digest.hexdigest() if digest else None

        thread = threading.Thread(target=sink)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the relay to listen
            try:
                with open("/proc/net/tcp") as f:
                    if f":{relay_port:04X} 00000000:0000 0A" in f.read():
                        break
            except OSError:
                pass
            time.sleep(0.02)
        cpu0 = cpu_seconds(relay.pid)
        t0 = time.monotonic()
        sender = subprocess.Popen(
            ["bash", "-c",
             f"'{sys.executable}' '{BENCH / 'gen.py'}' {nbytes} | "
             f"'{socat}' -u -b {SOCAT_BUFFER} STDIN TCP:{HOST}:{relay_port}"])
        # the relay's CPU must be read before it exits
        cpu = cpu0
        while relay.poll() is None:
            try:
                cpu = cpu_seconds(relay.pid)
            except (OSError, IndexError):
                break
            time.sleep(0.02)
        sender.wait()
        thread.join(60)
    if result.get("bytes") != nbytes:
        raise RuntimeError(f"socat: got {result.get('bytes')} bytes of {nbytes}")
    if sha and result["sha"] != gen.expected_sha256(nbytes):
        raise RuntimeError("socat: sha256 mismatch")
    elapsed = result["end"] - t0
    return {"mbps": nbytes / elapsed / 1e6, "cpu_s_per_gb": (cpu - cpu0) / (nbytes / 1e9),
            "seconds": elapsed}


# --------------------------------------------------------------- raw-socket HTTP
async def read_response(reader: asyncio.StreamReader) -> Tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return status, await reader.read()


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()


def put_head(path: str, length: int) -> bytes:
    return (f"PUT {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def put_request(path: str, body: bytes) -> bytes:
    return put_head(path, len(body)) + body


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def pair(port: int, body: bytes) -> float:
    """Receiver then sender on a fresh path; seconds until the receiver has the body."""
    path = fresh_path("lat")
    t0 = time.perf_counter()
    rr, rw = await asyncio.open_connection(HOST, port)
    rw.write(get_request(path))
    sr, sw = await asyncio.open_connection(HOST, port)
    sw.write(put_request(path, body))
    status, got = await read_response(rr)
    t1 = time.perf_counter()
    await sr.read()  # the sender's progress lines, to the end
    await close(rw)
    await close(sw)
    if status != 200 or got != body:
        raise RuntimeError(f"pair failed: {status} {len(got)} bytes")
    return t1 - t0


async def pairs(port: int, count: int, concurrency: int, body: bytes) -> List[float]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> float:
        async with gate:
            return await asyncio.wait_for(pair(port, body), 60)

    return list(await asyncio.gather(*(one() for _ in range(count))))


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latency(server: HttpServer, count: int, concurrency: int) -> Dict[str, Any]:
    body = os.urandom(1024)
    asyncio.run(pairs(server.port, 10, 1, body))  # warm up
    times = asyncio.run(pairs(server.port, count, concurrency, body))
    return {"p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3}


def settle_rss(pid: int, quiet: float = 1.0, limit: float = 20.0) -> int:
    """RSS once it has stopped changing for ``quiet`` seconds."""
    last = rss_bytes(pid)
    still_since = time.monotonic()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_bytes(pid)
        if abs(now - last) > 16 * 1024:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return rss_bytes(pid)


# --------------------------------------------------------------- (4) parked receivers
async def parked_async(server: HttpServer, count: int) -> Dict[str, Any]:
    body = b"parked!\n"
    await pairs(server.port, 50, 10, body)  # warm up
    base = settle_rss(server.pid)
    paths = [fresh_path(f"park{i}") for i in range(count)]
    conns: List[Tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    batch = 250
    for start in range(0, count, batch):
        opened = await asyncio.gather(
            *(asyncio.open_connection(HOST, server.port) for _ in paths[start:start + batch]))
        for (reader, writer), path in zip(opened, paths[start:start + batch]):
            writer.write(get_request(path))
            await writer.drain()
        conns.extend(opened)
    await asyncio.sleep(1.0)
    parked = settle_rss(server.pid)
    gate = asyncio.Semaphore(200)
    failures = 0

    async def complete(i: int) -> None:
        nonlocal failures
        try:
            await asyncio.wait_for(complete1(i), 60)
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            failures += 1

    async def complete1(i: int) -> None:
        nonlocal failures
        async with gate:
            sr, sw = await asyncio.open_connection(HOST, server.port)
            sw.write(put_request(paths[i], body))
            status, got = await read_response(conns[i][0])
            await sr.read()
            await close(sw)
            await close(conns[i][1])
            if status != 200 or got != body:
                failures += 1

    t0 = time.monotonic()
    await asyncio.gather(*(complete(i) for i in range(count)))
    return {
        "rss_per_party_kib": (parked - base) / count / 1024,
        "rss_base_mib": base / MiB,
        "completed": count - failures,
        "complete_seconds": time.monotonic() - t0,
    }


def parked(server: HttpServer, count: int) -> Dict[str, Any]:
    result = asyncio.run(parked_async(server, count))
    if result["completed"] != count:
        raise RuntimeError(f"{server.name}: only {result['completed']} of {count} completed")
    return result


# --------------------------------------------------------------- (5) slow reader
def slow_reader(server: HttpServer, offer: int, rate: float, duration: float) -> Dict[str, Any]:
    asyncio.run(pairs(server.port, 20, 5, b"warm\n"))
    base = settle_rss(server.pid, quiet=0.5)
    path = fresh_path("slow")
    receiver = socket.create_connection((HOST, server.port))
    receiver.sendall(get_request(path))
    sender = socket.create_connection((HOST, server.port))
    sender.sendall(put_head(path, offer))
    sent = [0]
    samples: List[Tuple[float, int]] = []
    stop = threading.Event()

    def send() -> None:
        chunk = gen.block()[:65536]
        try:
            while sent[0] < offer and not stop.is_set():
                sender.sendall(chunk[: offer - sent[0]])
                sent[0] += min(len(chunk), offer - sent[0])
        except OSError:
            pass

    thread = threading.Thread(target=send, daemon=True)
    t0 = time.monotonic()
    thread.start()
    received = 0
    peak = base
    next_sample = t0
    buf = bytearray(16384)
    receiver.settimeout(0.05)
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        if now >= next_sample:
            peak = max(peak, rss_bytes(server.pid))
            samples.append((now - t0, sent[0]))
            next_sample = now + 0.1
        if received < rate * (now - t0):
            try:
                received += receiver.recv_into(buf)
            except socket.timeout:
                pass
        else:
            time.sleep(0.005)
    stop.set()
    sender_bytes = sent[0]
    half = [s for s in samples if s[0] >= duration / 2]
    late_rate = ((half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0])
                 if len(half) > 1 and half[-1][0] > half[0][0] else 0.0)
    for s in (sender, receiver):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
    thread.join(5)
    return {
        "rss_growth_mib": (peak - base) / MiB,
        "sender_mb": sender_bytes / 1e6,
        "reader_mb": received / 1e6,
        "sender_late_mbps": late_rate / 1e6,
        "offered_mb": offer / 1e6,
        "seconds": duration,
    }


# --------------------------------------------------------------- (6) leak
def leak(server: HttpServer, rounds: int, per_round: int) -> Dict[str, Any]:
    body = os.urandom(1024)
    rss = []
    for _ in range(rounds):
        asyncio.run(pairs(server.port, per_round, 100, body))
        rss.append(settle_rss(server.pid, quiet=0.5, limit=5))
    return {"rss_round2_mib": rss[1] / MiB, "rss_last_mib": rss[-1] / MiB,
            "growth_mib": (rss[-1] - rss[1]) / MiB, "rounds": rounds}


# --------------------------------------------------------------- (7) HTTP/2
# variant: (label, server, curl protocol options, the http_version curl must report)
H2_VARIANTS = {
    "ours_h2_tls": ("ours h2 over TLS", "ours_tls", ["--http2"], "2"),
    "piping_h2_tls": ("piping h2 over TLS", "piping_tls", ["--http2"], "2"),
    "ours_h1_tls": ("ours HTTP/1.1 over TLS", "ours_tls", ["--http1.1"], "1.1"),
    "ours_h2c": ("ours h2c (prior knowledge)", "ours", ["--http2-prior-knowledge"], "2"),
    "ours_h1": ("ours HTTP/1.1 cleartext", "ours", ["--http1.1"], "1.1"),
    # --base: the other checkout, beside ours in the same run
    "base_h2_tls": ("base h2 over TLS", "base_tls", ["--http2"], "2"),
    "base_h2c": ("base h2c (prior knowledge)", "base", ["--http2-prior-knowledge"], "2"),
}
H2_ROWS = {"h2tls": ["ours_h2_tls", "base_h2_tls", "piping_h2_tls", "ours_h1_tls"],
           "h2c": ["ours_h2c", "base_h2c", "ours_h1"]}


def make_cert(directory: Path) -> Tuple[Path, Path]:
    """A throwaway self-signed P-256 certificate for 127.0.0.1 (key.pem, cert.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def machine_ticks() -> Tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_rusage(procs: List[subprocess.Popen], timeout: float) -> Tuple[List[float], List[float]]:
    """Wait for all processes: the monotonic time each one ended, and its
    user+system CPU seconds (wait4)."""
    ends = [0.0] * len(procs)
    cpus = [0.0] * len(procs)

    def waiter(i: int) -> None:
        _, status, usage = os.wait4(procs[i].pid, 0)
        ends[i] = time.monotonic()
        cpus[i] = usage.ru_utime + usage.ru_stime
        procs[i].returncode = os.waitstatus_to_exitcode(status)

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(len(procs))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        for p in procs:
            p.kill()
        for t in threads:
            t.join()
        raise RuntimeError("transfer timed out")
    return ends, cpus


def h2_transfer(server: HttpServer, options: List[str], want: str, nbytes: int,
                sha: bool = False) -> Dict[str, Any]:
    """One curl sender (gen.py piped into ``curl -T -``) and one curl receiver, both
    with ``options``; MB/s, server CPU s/GB and the two curls' CPU s/GB (wait4: the
    curls alone, not gen.py)."""
    curl = ["curl", "-sS", "--fail"] + options
    if server.cert:
        curl += ["--cacert", str(server.cert)]
    url = server.url(fresh_path("h2"))
    busy0, total0 = machine_ticks()
    cpu0 = cpu_seconds(server.pid)
    if sha:
        receiver = subprocess.Popen(
            ["bash", "-c", "set -o pipefail; " + " ".join(curl) + f" '{url}' | sha256sum"],
            stdout=subprocess.PIPE)
    else:
        receiver = subprocess.Popen(
            curl + ["-o", "/dev/null", "-w", "%{size_download} %{http_version}", url],
            stdout=subprocess.PIPE)
    time.sleep(0.3)  # let it park, so the clock measures the transfer alone
    read_end, write_end = os.pipe()
    t0 = time.monotonic()
    source = subprocess.Popen([sys.executable, str(BENCH / "gen.py"), str(nbytes)],
                              stdout=write_end)
    os.close(write_end)
    sender = subprocess.Popen(curl + ["-T", "-", "-w", "\n@%{http_version}", url],
                              stdin=read_end, stdout=subprocess.PIPE)
    os.close(read_end)
    ends, cpus = wait_rusage([receiver, sender], timeout=600)
    source.wait()
    cpu = cpu_seconds(server.pid) - cpu0
    busy1, total1 = machine_ticks()
    out = [line for line in sender.stdout.read().decode(  # type: ignore[union-attr]
        errors="replace").splitlines() if line.strip()]
    got = receiver.stdout.read().decode().split()  # type: ignore[union-attr]
    if sender.returncode != 0 or len(out) < 2 or "successfully" not in out[-2]:
        raise RuntimeError(f"{server.name} {options}: sender failed "
                           f"(curl exit {sender.returncode}): {out[-3:]!r}")
    if receiver.returncode != 0 or not got:
        raise RuntimeError(f"{server.name} {options}: receiver failed "
                           f"(exit {receiver.returncode})")
    proto = out[-1].lstrip("@")
    if sha:
        if got[0] != gen.expected_sha256(nbytes):
            raise RuntimeError(f"{server.name} {options}: sha256 mismatch")
    else:
        if int(got[0]) != nbytes:
            raise RuntimeError(f"{server.name} {options}: got {got[0]} bytes of {nbytes}")
        if got[1] != proto:
            raise RuntimeError(f"{server.name} {options}: sender on HTTP/{proto}, "
                               f"receiver on HTTP/{got[1]}")
    if proto != want:
        raise WrongProtocol(proto)
    elapsed = max(ends) - t0
    gb = nbytes / 1e9
    return {"mbps": nbytes / elapsed / 1e6, "cpu_s_per_gb": cpu / gb,
            "client_cpu_s_per_gb": sum(cpus) / gb, "receiver_cpu_s_per_gb": cpus[0] / gb,
            "sender_cpu_s_per_gb": cpus[1] / gb, "seconds": elapsed,
            # how busy all cores were meanwhile, everyone's work included (the
            # machine is shared): near 1 means the row was CPU-bound
            "machine_busy": (busy1 - busy0) / max(1, total1 - total0)}


class WrongProtocol(RuntimeError):
    """curl spoke another HTTP version than the row is about (no ALPN h2 yet)."""


def h2_rows(rows: List[str], starters: Dict[str, Callable[[], HttpServer]], runs: int,
            nbytes: int, only: Optional[set] = None) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Every variant of ``rows``, run i of each in turn, then run i + 1 of each."""
    variants = [v for row in rows for v in H2_ROWS[row] if not only or v in only]
    results: Dict[str, Any] = {}
    status: Dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        running: Dict[str, HttpServer] = {}
        moves: Dict[str, Callable[..., Dict[str, Any]]] = {}
        for v in variants:
            label, server, options, want = H2_VARIANTS[v]
            if server.startswith("base") and server not in starters:
                continue  # no --base: not a row at all
            if server not in starters:
                status[v] = "server skipped"
                continue
            if server not in running:
                running[server] = stack.enter_context(starters[server]())
            move = functools.partial(h2_transfer, running[server], options, want)
            log(f"[{v}] warm-up and sha256 of 16 MiB")
            try:
                move(16 * MiB, sha=True)
                move(16 * MiB)
            except WrongProtocol as e:
                status[v] = f"curl got HTTP/{e}"
                note(f"{label}: curl got HTTP/{e}, not HTTP/{want}: row skipped")
                continue
            except RuntimeError as e:
                status[v] = "failed"
                note(f"{label}: failed ({e}): row skipped")
                continue
            moves[v] = move
            status[v] = "ok"
        done: Dict[str, List[Dict[str, Any]]] = {v: [] for v in moves}
        for i in range(runs):
            for v, move in moves.items():
                done[v].append(run_once(lambda: move(nbytes), v, i, runs))
        for v in moves:
            results[v] = summarize(done[v])
            results[v]["runs"] = done[v]  # type: ignore[assignment]
    return results, status


def ceiling(res: Dict[str, Any], cores: int) -> float:
    """The MB/s at which server and clients together would use every core."""
    return cores * 1e3 / (res["cpu_s_per_gb"]["median"] + res["client_cpu_s_per_gb"]["median"])


def h2_table(results: Dict[str, Any], status: Dict[str, str], size: str) -> str:
    cores = len(os.sched_getaffinity(0))
    lines = [f"| 1:1 {size}, curl at both ends | MB/s | server CPU s/GB | clients CPU s/GB "
             f"| of which sender, receiver | ceiling MB/s: {cores} cores, 1 core for the server "
             "| machine busy |", "|---|---|---|---|---|---|---|"]
    for v, (label, _server, _options, _want) in H2_VARIANTS.items():
        if v not in status:
            continue
        res = results.get(v)
        if res is None:
            lines.append(f"| {label} | {status[v]} | | | | | |")
            continue
        lines.append(f"| {label} | {fmt(res['mbps'])} | {fmt(res['cpu_s_per_gb'], 2)} | "
                     f"{fmt(res['client_cpu_s_per_gb'], 2)} | "
                     f"{res['sender_cpu_s_per_gb']['median']:.2f}, "
                     f"{res['receiver_cpu_s_per_gb']['median']:.2f} | "
                     f"{ceiling(res, cores):.0f}, {1e3 / res['cpu_s_per_gb']['median']:.0f} | "
                     f"{res['machine_busy']['median']:.0%} |")

    def med(v: str, k: str) -> Optional[float]:
        return results[v][k]["median"] if v in results else None

    checks = [
        ("h2 TLS MB/s ≥ 1.5× piping h2 TLS", med("ours_h2_tls", "mbps"),
         med("piping_h2_tls", "mbps"), lambda o, b: o >= 1.5 * b),
        ("h2 TLS server CPU s/GB ≤ piping h2 TLS", med("ours_h2_tls", "cpu_s_per_gb"),
         med("piping_h2_tls", "cpu_s_per_gb"), lambda o, b: o <= b),
        ("h2c MB/s ≥ 0.7× ours HTTP/1.1 cleartext", med("ours_h2c", "mbps"),
         med("ours_h1", "mbps"), lambda o, b: o >= 0.7 * b),
        ("(h2 TLS MB/s vs ours HTTP/1.1 TLS)", med("ours_h2_tls", "mbps"),
         med("ours_h1_tls", "mbps"), None),
    ]
    lines += ["", "| target | ratio of medians | met |", "|---|---|---|"]
    for text, o, b, check in checks:
        if o is None or b is None:
            continue
        met = "" if check is None else ("yes" if check(o, b) else "**no**")
        lines.append(f"| {text} | {o / b:.2f}× | {met} |")
    return "\n".join(lines)


# --------------------------------------------------------------- the table
def summary(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def fmt(stat: Optional[Dict[str, float]], digits: int = 0) -> str:
    if not stat:
        return "—"
    f = f"{{:.{digits}f}}"
    text = f.format(stat["median"])
    if stat["n"] > 1:
        text += f" ({f.format(stat['min'])}–{f.format(stat['max'])})"
    return text


# metric key, label, digits, higher is better, target description
ROWS = [
    ("throughput.mbps", "1:1 {size} MB/s (curl)", 0, True),
    ("throughput.cpu_s_per_gb", "1:1 server CPU s/GB", 3, False),
    ("throughput.sha_ok", "1:1 sha256 {sha_size} ok", None, True),
    ("fanout4.total_mbps", "K=4 {fsize} total MB/s", 0, True),
    ("fanout4.per_receiver_mbps", "K=4 per-receiver MB/s", 0, True),
    ("fanout16.total_mbps", "K=16 {fsize} total MB/s", 0, True),
    ("fanout16.per_receiver_mbps", "K=16 per-receiver MB/s", 0, True),
    ("latency_seq.p50_ms", "1 KiB latency seq p50 ms", 2, False),
    ("latency_seq.p99_ms", "1 KiB latency seq p99 ms", 2, False),
    ("latency_conc.p50_ms", "1 KiB latency 100 conc p50 ms", 1, False),
    ("latency_conc.p99_ms", "1 KiB latency 100 conc p99 ms", 1, False),
    ("parked.rss_per_party_kib", "parked receiver RSS KiB/party", 1, False),
    ("parked.completed", "parked: all completed", None, True),
    ("slow.rss_growth_mib", "slow reader: RSS growth MiB", 2, False),
    ("slow.sender_mb", "slow reader: sender MB accepted", 1, False),
    ("slow.sender_late_mbps", "slow reader: sender MB/s (2nd half)", 2, False),
    ("leak.growth_mib", "leak: RSS round {r2}→{rlast} MiB", 2, False),
]

TARGETS = {
    "throughput.mbps": ("≥1.0× piping, ≥0.9× socat", lambda o, p, s: (p is None or o >= p) and (s is None or o >= 0.9 * s)),
    "throughput.cpu_s_per_gb": ("≤0.35", lambda o, p, s: o <= 0.35),
    "fanout16.total_mbps": ("≥ piping", lambda o, p, s: p is None or o >= p),
    "latency_seq.p50_ms": ("≤ piping", lambda o, p, s: p is None or o <= p),
    "latency_conc.p50_ms": ("≤ piping", lambda o, p, s: p is None or o <= p),
    "parked.rss_per_party_kib": ("≤8", lambda o, p, s: o <= 8),
    "slow.rss_growth_mib": ("≤2", lambda o, p, s: o <= 2),
    "leak.growth_mib": ("≤1", lambda o, p, s: o <= 1),
}


def table(results: Dict[str, Dict[str, Any]], cfg: Dict[str, Any], quick: bool = False) -> str:
    servers = [s for s in ("ours", "base", "socat", "piping") if s in results]
    head = ["metric"] + servers + ["ours/piping", "ours/socat", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, digits, _better in ROWS:
        group, metric = key.split(".")
        cells = []
        medians: Dict[str, Optional[float]] = {}
        for s in servers:
            stat = results[s].get(group, {}).get(metric)
            medians[s] = stat["median"] if stat else None
            if digits is None:
                cells.append("—" if not stat else ("yes" if stat["min"] else "NO"))
            else:
                cells.append(fmt(stat, digits))
        if all(v is None for v in medians.values()):
            continue
        o, p, sc = medians.get("ours"), medians.get("piping"), medians.get("socat")
        ratio_p = f"{o / p:.2f}×" if o is not None and p and digits is not None else ""
        ratio_s = f"{o / sc:.2f}×" if o is not None and sc and digits is not None else ""
        target, check = TARGETS.get(key, ("", None))
        met = ""
        if check is not None and o is not None:
            if quick:
                # The targets are stated for the full run's sizes: a quick
                # 256 MiB transfer is mostly start-up and end, and its leak
                # rounds (2 to 5 of 300 pairs) still see the allocator settle.
                met = "(full run only)"
            else:
                met = "yes" if check(o, p, sc) else "**no**"
        lines.append("| " + " | ".join(
            [label.format(**cfg)] + cells + [ratio_p, ratio_s, target, met]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------- main
def run_once(fn: Callable[[], Dict[str, Any]], label: str, i: int, runs: int) -> Dict[str, Any]:
    result = fn()
    log(f"  {label} run {i + 1}/{runs}: " + ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return result


def summarize(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    per: Dict[str, List[float]] = {}
    for result in results:
        for k, v in result.items():
            per.setdefault(k, []).append(float(v))
    return {k: summary(v) for k, v in per.items()}


def collect(runs: int, fn: Callable[[], Dict[str, Any]], label: str) -> Dict[str, Dict[str, float]]:
    return summarize([run_once(fn, label, i, runs) for i in range(runs)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        default=bool(os.environ.get("BENCH_QUICK")),
                        help="fewer runs, smaller sizes (also BENCH_QUICK=1)")
    parser.add_argument("--runs", type=int, default=None, help="runs per row (default 5, quick 2)")
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                        help="comma list of: throughput,fanout,latency,parked,slow,leak,"
                             "h2tls,h2c (h2 = both),broker")
    parser.add_argument("--servers",
                        default=os.environ.get("BENCH_SERVERS", "ours,socat,piping,redis"),
                        help="comma list of: ours,socat,piping,redis (redis: row broker only)")
    parser.add_argument("--base", default=os.environ.get("BENCH_BASE"),
                        help="another pipeserver checkout (e.g. a git worktree of the commit "
                             "before a change), run as server 'base' beside 'ours'")
    parser.add_argument("--profile", default=os.environ.get("BENCH_PROFILE"),
                        help="directory: run ours in the h2tls/h2c rows under cProfile "
                             "(twistd --profiler cprofile --savestats), one pstats file per server")
    parser.add_argument("--variants", default=os.environ.get("BENCH_VARIANTS", ""),
                        help="rows h2tls/h2c: only these of " + ",".join(H2_VARIANTS)
                             + " (e.g. one at a time under --profile)")
    parser.add_argument("--ours-option", action="append", default=[],
                        help="an extra option for twistd pipe in every row, e.g. "
                             "--ours-option=--h2-window=1048576 (repeatable)")
    parser.add_argument("--json", default=None, help="where to write the JSON (default bench/results/)")
    args = parser.parse_args()

    quick = args.quick
    OURS_OPTIONS.extend(args.ours_option)
    runs = args.runs or (2 if quick else 5)
    mem_runs = max(1, min(runs, 3))
    cfg = {
        "size": 256 * MiB if quick else GiB,
        "sha_size": 16 * MiB if quick else 64 * MiB,
        "fsize": 64 * MiB if quick else 256 * MiB,
        "seq": 50 if quick else 200,
        "conc": 100,
        "parked": 2000 if quick else 10000,
        "slow_offer": 200 * 1000 * 1000,
        "slow_seconds": 5.0 if quick else 10.0,
        "leak_rounds": 5 if quick else 10,
        "leak_pairs": 300 if quick else 1000,
        "h2_size": 256 * MiB,
    }
    only = set(filter(None, args.only.split(","))) or {
        "throughput", "fanout", "latency", "parked", "slow", "leak", "h2tls", "h2c", "broker"}
    if "h2" in only:
        only |= {"h2tls", "h2c"}
    wanted = set(filter(None, args.servers.split(",")))
    fds = raise_fd_limit()
    if fds < cfg["parked"] * 2 + 100 and "parked" in only:
        cfg["parked"] = max(100, (fds - 100) // 2)
        note(f"fd limit {fds}: parked receivers lowered to {cfg['parked']}")

    socat = ensure_socat() if "socat" in wanted and "throughput" in only else None
    piping_argv = ensure_piping() if "piping" in wanted else None
    servers: Dict[str, Callable[[int], List[str]]] = {}
    if "ours" in wanted:
        servers["ours"] = ours_argv
    if args.base:
        servers["base"] = ours_argv
    if piping_argv:
        servers["piping"] = lambda port: piping_argv + ["--host", HOST, "--http-port", str(port)]

    results: Dict[str, Dict[str, Any]] = {name: {} for name in servers}
    if socat:
        results["socat"] = {}
    started = time.time()

    def fresh(name: str) -> HttpServer:
        root = Path(args.base).resolve() if name == "base" else ROOT
        return HttpServer(name, servers[name], root)

    if "throughput" in only:
        # Run i of every server, then run i + 1 of every server: load that
        # drifts during the row (a shared machine) weighs on all alike, so
        # the ratios between them stay fair.
        with contextlib.ExitStack() as stack:
            transfer: Dict[str, Callable[..., Dict[str, Any]]] = {}
            for name in servers:
                srv = stack.enter_context(fresh(name))
                transfer[name] = functools.partial(curl_transfer, srv)
            if socat:
                transfer["socat"] = functools.partial(socat_transfer, socat)
            for name, move in transfer.items():
                log(f"[throughput] {name}: warm-up and sha256 of {cfg['sha_size'] // MiB} MiB")
                move(16 * MiB)
                run_once(lambda: move(cfg["sha_size"], sha=True), "sha", 0, 1)
            done: Dict[str, List[Dict[str, Any]]] = {name: [] for name in transfer}
            for i in range(runs):
                for name, move in transfer.items():
                    done[name].append(run_once(lambda: move(cfg["size"]), f"1:1 {name}", i, runs))
            for name in transfer:
                res = summarize(done[name])
                res["sha_ok"] = summary([1.0])  # a failed check raised above
                results[name]["throughput"] = res
    if "fanout" in only:
        for name in servers:
            for k in (4, 16):
                log(f"[fanout K={k}] {name}")
                with fresh(name) as srv:
                    res = collect(runs, lambda: curl_transfer(srv, cfg["fsize"], k=k), f"K={k}")
                    res["total_mbps"] = res.pop("mbps")
                    results[name][f"fanout{k}"] = res
    if "latency" in only:
        # In turn, run by run, as for throughput.
        with contextlib.ExitStack() as stack:
            running = {name: stack.enter_context(fresh(name)) for name in servers}
            seq: Dict[str, List[Dict[str, Any]]] = {name: [] for name in running}
            conc: Dict[str, List[Dict[str, Any]]] = {name: [] for name in running}
            for i in range(runs):
                for name, srv in running.items():
                    log(f"[latency] {name}")
                    seq[name].append(run_once(lambda: latency(srv, cfg["seq"], 1), "seq", i, runs))
                    conc[name].append(run_once(
                        lambda: latency(srv, cfg["conc"], cfg["conc"]), "conc", i, runs))
            for name in running:
                results[name]["latency_seq"] = summarize(seq[name])
                results[name]["latency_conc"] = summarize(conc[name])
    if "parked" in only:
        for name in servers:
            log(f"[parked x{cfg['parked']}] {name}")

            def one_parked() -> Dict[str, Any]:
                with fresh(name) as srv:
                    return parked(srv, cfg["parked"])

            res = collect(mem_runs, one_parked, "parked")
            results[name]["parked"] = res
    if "slow" in only:
        for name in servers:
            log(f"[slow reader] {name}")

            def one_slow() -> Dict[str, Any]:
                with fresh(name) as srv:
                    return slow_reader(srv, cfg["slow_offer"], 1e6, cfg["slow_seconds"])

            results[name]["slow"] = collect(mem_runs, one_slow, "slow")
    if "leak" in only:
        for name in servers:
            log(f"[leak] {name}")

            def one_leak() -> Dict[str, Any]:
                with fresh(name) as srv:
                    return leak(srv, cfg["leak_rounds"], cfg["leak_pairs"])

            results[name]["leak"] = collect(mem_runs, one_leak, "leak")

    h2_text = ""
    if only & {"h2tls", "h2c"}:
        with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
            key, cert = make_cert(Path(tmp))
            prof: Dict[str, Tuple[str, ...]] = {"ours": (), "ours_tls": ()}
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                for name in prof:
                    prof[name] = (f"--profile={Path(args.profile).resolve() / name}.pstats",
                                  "--profiler=cprofile", "--savestats")
            tls_listen = f"ssl:{{port}}:interface={{host}}:privateKey={key}:certKey={cert}"
            starters: Dict[str, Callable[[], HttpServer]] = {}
            if "ours" in wanted:
                starters["ours"] = lambda: HttpServer(
                    "ours", lambda port: ours_argv(port, twistd_options=prof["ours"]))
                starters["ours_tls"] = lambda: HttpServer(
                    "ours_tls", lambda port: ours_argv(port, tls_listen, prof["ours_tls"]),
                    cert=cert)
            if args.base:
                base_root = Path(args.base).resolve()
                starters["base"] = lambda: HttpServer("base", ours_argv, base_root)
                starters["base_tls"] = lambda: HttpServer(
                    "base_tls", lambda port: ours_argv(port, tls_listen), base_root, cert=cert)
            if piping_argv:
                starters["piping_tls"] = lambda: HttpServer(
                    "piping_tls", lambda port: piping_argv + [
                        "--host", HOST, "--http-port", str(free_port()), "--enable-https",
                        "--https-port", str(port), "--key-path", str(key),
                        "--crt-path", str(cert)], cert=cert)
            rows = [row for row in ("h2tls", "h2c") if row in only]
            h2_results, h2_status = h2_rows(rows, starters, runs, cfg["h2_size"],
                                            set(filter(None, args.variants.split(","))))
            for v, res in h2_results.items():
                results.setdefault("h2", {})[v] = res
            results.setdefault("h2", {})["status"] = h2_status
            h2_text = h2_table(h2_results, h2_status, f"{cfg['h2_size'] // MiB} MiB")

    broker_text = ""
    if "broker" in only:
        import broker  # (it imports this module: late, so as not to loop)

        systems = [s for s in ("ours", "base", "piping", "redis")
                   if s in wanted or (s == "base" and args.base)]
        if piping_argv is None and "piping" in systems:
            systems.remove("piping")  # (the note is printed already)
        done = broker.bench(runs, quick, systems, list(broker.ROWS), args.base)
        results["broker"] = done
        broker_text = broker.report(done)

    fmt_cfg = {
        "size": f"{cfg['size'] // MiB} MiB", "sha_size": f"{cfg['sha_size'] // MiB} MiB",
        "fsize": f"{cfg['fsize'] // MiB} MiB", "r2": 2, "rlast": cfg["leak_rounds"],
    }
    text = table(results, fmt_cfg, quick)
    print(f"\npipeserver bench — {'quick, ' if quick else ''}{runs} runs per row "
          f"({mem_runs} for memory rows); median (min–max)\n")
    if text.count("\n") > 1:
        print(text)
    if h2_text:
        print(f"\nHTTP/2 rows (issue 12), the variants taking turns run by run:\n\n{h2_text}")
    if broker_text:
        print(f"\n{broker_text}")
    for n in NOTES:
        print(f"\nnote: {n}")
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 1),
        "quick": quick, "runs": runs, "mem_runs": mem_runs, "config": cfg,
        "socat_buffer": SOCAT_BUFFER, "piping_version": PIPING_VERSION,
        "notes": NOTES, "results": results, "table": text, "h2_table": h2_text,
    }
    path = Path(args.json) if args.json else (
        BENCH / "results" / time.strftime("bench-%Y%m%d-%H%M%S.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
