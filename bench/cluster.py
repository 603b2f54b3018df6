#!/usr/bin/env python3
"""Scaling benchmark (issue 6): pipes through HAProxy to 1 vs 2 instances.

    .venv/bin/python bench/cluster.py [--pipes 8] [--size-mib 64] [--runs 3] [--pairs 300]

In one run, on free loopback ports, with deploy/cluster.py (the `make cluster`
script, so the config is deploy/haproxy.cfg):

- throughput: M concurrent one-to-one pipes (curl -T FILE -> curl -o /dev/null),
  aggregate MB/s, (a) straight to one instance, (b) through HAProxy to one
  instance, (c) through HAProxy to two instances (paths picked so that each
  instance gets half of the pipes);
- per-transfer cost: sequential small pipes (1 KiB, receiver first, raw
  sockets, new connections), median and p90 time per pipe, straight to an
  instance vs through HAProxy.

Prints a table and the machine's CPU count; docs/scaling.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
CLUSTER = os.path.join(ROOT, "deploy", "cluster.py")
sys.path.insert(0, os.path.join(ROOT, "deploy"))
from cluster import free_port  # noqa: E402

MiB = 1 << 20
INSTANCE = re.compile(r"\[cluster\] (pipe\d+) pid=\d+ listening on [\d.]+:(\d+)")


class Running:
    """deploy/cluster.py -n N in the background, its output in a file."""

    def __init__(self, n: int) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-cluster-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, CLUSTER, "-n", str(n), "--port", str(self.port),
             "--base-port", "0", "--instance-header"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 40
        while "[cluster] ready:" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cluster did not start:\n{self.text()}")
            time.sleep(0.1)
        self.instances: Dict[str, int] = {m.group(1): int(m.group(2))
                                          for m in INSTANCE.finditer(self.text())}

    def text(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        os.unlink(self.log.name)


def instance_of(port: int, path: str) -> str:
    out = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "-X", "OPTIONS", "-D", "-", "-o", "/dev/null",
         f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True,
    ).stdout
    found = re.search(r"(?im)^x-pipe-instance:\s*(\S+)", out)
    return found.group(1) if found else "?"


def balanced_paths(port: int, instances: List[str], count: int, tag: str) -> List[str]:
    """``count`` paths, spread evenly over ``instances`` by the balancer."""
    want = {name: count // len(instances) + (i < count % len(instances))
            for i, name in enumerate(instances)}
    paths: List[str] = []
    i = 0
    while len(paths) < count:
        path = f"/bench/{tag}/{i}"
        i += 1
        name = instance_of(port, path)
        if want.get(name, 0) > 0:
            want[name] -= 1
            paths.append(path)
    return paths


def throughput(port: int, paths: List[str], source: str, size: int) -> float:
    """Aggregate MB/s of len(paths) concurrent 1:1 pipes of ``size`` bytes."""
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    receivers = [subprocess.Popen(
        ["curl", "-sS", "--fail", "--noproxy", "*", "-o", "/dev/null", "-w", "%{size_download}",
         base + p], stdout=subprocess.PIPE) for p in paths]
    senders = [subprocess.Popen(
        ["curl", "-sS", "--fail", "--noproxy", "*", "-o", "/dev/null", "-T", source, base + p])
        for p in paths]
    got = 0
    for proc in receivers:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a receiver failed ({proc.returncode})")
        got += int(out or 0)
    for proc in senders:
        if proc.wait(timeout=600) != 0:
            raise SystemExit(f"a sender failed ({proc.returncode})")
    elapsed = time.monotonic() - started
    if got != size * len(paths):
        raise SystemExit(f"received {got} bytes, expected {size * len(paths)}")
    return got / elapsed / 1e6


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await reader.read(-1)


async def one_pipe(port: int, path: str, body: bytes) -> float:
    started = time.perf_counter()
    r_reader, r_writer = await asyncio.open_connection("127.0.0.1", port)
    r_writer.write(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
    await r_writer.drain()
    s_reader, s_writer = await asyncio.open_connection("127.0.0.1", port)
    s_writer.write(f"PUT {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    received, sent = await asyncio.gather(_read_all(r_reader), _read_all(s_reader))
    elapsed = time.perf_counter() - started
    for w in (r_writer, s_writer):
        w.close()
    if not received.endswith(body) or b"received successfully" not in sent:
        raise SystemExit(f"small pipe on {path} failed: {received[:200]!r} {sent[-200:]!r}")
    return elapsed


def per_transfer(port: int, pairs: int, tag: str) -> List[float]:
    body = os.urandom(1024)

    async def run() -> List[float]:
        return [await one_pipe(port, f"/bench/small/{tag}/{i}", body) for i in range(pairs)]

    return asyncio.run(run())


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipes", type=int, default=8, help="concurrent pipes (M)")
    parser.add_argument("--size-mib", type=int, default=64, help="MiB per pipe")
    parser.add_argument("--runs", type=int, default=3, help="runs per setup (median kept)")
    parser.add_argument("--pairs", type=int, default=300, help="small pipes for the cost")
    opts = parser.parse_args()
    size = opts.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        source = os.path.join(tmp, "body")
        with open(source, "wb") as f:
            block = os.urandom(MiB)
            for _ in range(opts.size_mib):
                f.write(block)

        results: Dict[str, Tuple[float, List[float]]] = {}
        one, two = Running(1), Running(2)
        try:
            direct = one.instances["pipe1"]
            setups = [
                ("direct, 1 instance", direct, balanced_paths(one.port, ["pipe1"], opts.pipes, "d")),
                ("HAProxy, 1 instance", one.port,
                 balanced_paths(one.port, ["pipe1"], opts.pipes, "h1")),
                ("HAProxy, 2 instances", two.port,
                 balanced_paths(two.port, ["pipe1", "pipe2"], opts.pipes, "h2")),
            ]
            throughput(direct, setups[0][2][:1], source, size)  # warm up
            runs: Dict[str, List[float]] = {name: [] for name, _, _ in setups}
            for r in range(opts.runs):  # interleaved, so drift hits every setup alike
                for name, port, paths in setups:
                    mbps = throughput(port, paths, source, size)
                    runs[name].append(mbps)
                    print(f"# run {r + 1} {name}: {mbps:.0f} MB/s", file=sys.stderr, flush=True)
            for name in runs:
                results[name] = (statistics.median(runs[name]), runs[name])
            cost_direct = per_transfer(direct, opts.pairs, "d")
            cost_proxy = per_transfer(one.port, opts.pairs, "h")
        finally:
            one.stop()
            two.stop()

    print(f"\nmachine: {os.cpu_count()} CPUs; {opts.pipes} concurrent 1:1 pipes of "
          f"{opts.size_mib} MiB (curl -T file -> curl -o /dev/null), median of {opts.runs}\n")
    print("| setup | aggregate MB/s | runs |")
    print("| --- | ---: | --- |")
    for name, (median, values) in results.items():
        print(f"| {name} | {median:.0f} | {', '.join(f'{v:.0f}' for v in values)} |")
    print(f"\nper small pipe (1 KiB, receiver first, fresh connections), {opts.pairs} in a row:\n")
    print("| path | median ms | p90 ms |")
    print("| --- | ---: | ---: |")
    for name, values in (("direct", cost_direct), ("through HAProxy", cost_proxy)):
        print(f"| {name} | {statistics.median(values) * 1e3:.2f} | {pct(values, 0.9) * 1e3:.2f} |")
    added = statistics.median(cost_proxy) - statistics.median(cost_direct)
    print(f"\nHAProxy adds {added * 1e3:.2f} ms per pipe (median).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
