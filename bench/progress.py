#!/usr/bin/env python3
"""What ``?progress`` spectators cost a transfer they watch.

    .venv/bin/python bench/progress.py                      # 0 vs 100 spectators, 5 x 128 MiB at 64 MB/s
    .venv/bin/python bench/progress.py --spectators 500 --mib 64 --rounds 3

One pipeserver (``twistd pipe``, a child process); for each setting, in the
same run, ``--rounds`` transfers of ``--mib`` MiB from a curl sender to a
curl receiver (``--limit-rate``, so each takes seconds) on one path, watched by 0 and then by ``--spectators``
spectators of that path (raw sockets in this process, reading every event).
It prints each setting's median wall time and the server's CPU seconds per
transfer, and their ratio to the unwatched baseline. A spectator is read
from a timer, never on a byte's path: the ratio should stay near 1.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spectate(port: int, path: str, count: int) -> Callable[[], int]:
    """``count`` spectators of ``path``, read (and discarded) by a thread;
    returns what ends them, which says how many bytes they were sent."""
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET {path}?progress HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.setblocking(False)
        sockets.append(s)
    stop = threading.Event()
    got = [0]

    def read() -> None:
        selector = selectors.DefaultSelector()
        for s in sockets:
            selector.register(s, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in selector.select(0.1):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                got[0] += len(data)
                if not data:
                    selector.unregister(key.fileobj)
        selector.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()

    def end() -> int:
        stop.set()
        thread.join()
        for s in sockets:
            s.close()
        return got[0]

    return end


def transfer(port: int, path: str, data: str, rate: str) -> float:
    url = f"http://127.0.0.1:{port}{path}"
    start = time.monotonic()
    limit = ["--limit-rate", rate] if rate else []
    receiver = subprocess.Popen(["curl", "-sS", "-f", *limit, "-o", "/dev/null", url])
    sender = subprocess.Popen(["curl", "-sS", "-f", "-o", "/dev/null", "-T", data, url])
    if sender.wait() or receiver.wait():
        raise SystemExit("a transfer failed")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spectators", type=int, default=100)
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", default="64M",
                        help="the receiver's curl --limit-rate, so spectators are shown many "
                        "looks ('' for none)")
    args = parser.parse_args()
    port = free_port()
    twistd = [sys.executable, "-m", "twisted", "pipe",
              "--listen", f"tcp:{port}:interface=127.0.0.1"]
    server = subprocess.Popen(twistd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        with tempfile.NamedTemporaryFile() as data:
            data.write(os.urandom(MiB) * args.mib)
            data.flush()
            results = {}
            for count in (0, args.spectators):
                walls, cpus, shown = [], [], 0
                for round in range(args.rounds):
                    # A path of its own: spectators of a path just used
                    # would be shown its end and let go.
                    path = f"/bench-{count}-{round}"
                    end = spectate(port, path, count)
                    time.sleep(0.5)
                    before = cpu_seconds(server.pid)
                    walls.append(transfer(port, path, data.name, args.rate))
                    cpus.append(cpu_seconds(server.pid) - before)
                    shown += end()
                results[count] = (statistics.median(walls), statistics.median(cpus), shown)
        base_wall, base_cpu, _ = results[0]
        print(f"{args.rounds} x {args.mib} MiB, median per transfer")
        for count, (wall, cpu, shown) in results.items():
            print(f"  {count:4d} spectators: wall {wall:.3f}s (x{wall / base_wall:.2f}), "
                  f"server CPU {cpu:.3f}s (x{cpu / base_cpu if base_cpu else 0:.2f}); "
                  f"{shown // max(1, count * args.rounds):,} bytes of events per spectator")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
