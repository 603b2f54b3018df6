#!/usr/bin/env python3
"""What the browser page (``/``) holds in memory while it receives a file.

    .venv/bin/python bench/page_memory.py                  # 256 MiB: the page before issue 19 vs now
    .venv/bin/python bench/page_memory.py --mib 64 --baseline d3a1c45

For each page (the baseline: ``index.html`` of a git revision; then this
checkout's), in the same run: a pipeserver serving that page, a headless
Chromium (Debian's) receiving ``--mib`` MiB on it from a curl sender, and the
resident memory of Chromium's whole process tree sampled every 20 ms. It
prints each page's peak growth over the idle page, and the ratio to the
baseline. The pages hash what they receive (the baseline with
``crypto.subtle``: served on 127.0.0.1, a secure context) and keep it for
the Save link. Needs playwright (the test extras) and chromium.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def serve(page_file: str, port: int) -> None:
    """(In a child process.) pipeserver on 127.0.0.1:port, serving
    ``page_file`` as ``/``."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet import reactor

    from pipeserver.ops import tap
    from pipeserver.web import pages

    page = Path(page_file).read_bytes()
    script = re.search(rb"<script>(.*?)</script>", page, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1)).digest())
    pages._INDEX = page
    pages._INDEX_CSP = pages._INDEX_CSP.replace(
        re.search(rb"'sha256-[^']+'", pages._INDEX_CSP).group(0),  # type: ignore[union-attr]
        b"'sha256-" + digest + b"'",
    )
    options = tap.Options()
    options.parseOptions(["--listen", f"tcp:{port}:interface=127.0.0.1"])
    tap.makeService(options, reactor).startService()
    reactor.run()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(root: int) -> Set[int]:
    """``root`` and its descendants."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def rss(pids: Set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def browser_pid(profile: str) -> Optional[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                    args = cmd.read().split(b"\0")
            except OSError:
                continue
            if f"--user-data-dir={profile}".encode() in args and not any(
                a.startswith(b"--type=") for a in args
            ):
                return int(entry)
    return None


def measure(page_file: str, size: int, chromium: str) -> Dict[str, float]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", page_file, "--port", str(port)])
    sender = None
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            try:
                root = browser_pid(profile)
                assert root is not None, "no chromium process for the profile"
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.fill("#path", "/bench")
                time.sleep(1.0)
                idle = rss(tree(root))
                page.click("#receive")
                page.wait_for_function(
                    "document.getElementById('recv-status').textContent.startsWith('Waiting')")
                sender = subprocess.Popen(
                    f"head -c {size} /dev/urandom | curl -sS -T - http://127.0.0.1:{port}/bench",
                    shell=True, stdout=subprocess.DEVNULL)
                peak = idle
                done = threading.Event()
                started = time.monotonic()
                while not done.is_set():
                    peak = max(peak, rss(tree(root)))
                    if page.evaluate("'done' in document.getElementById('recv-status').dataset"):
                        done.set()
                    time.sleep(0.02)
                elapsed = time.monotonic() - started
                status = page.inner_text("#recv-status")
                assert status == f"Received {size:,} bytes.", status
                after = rss(tree(root))
            finally:
                context.close()
        return {"idle": idle, "peak": peak, "after": after, "seconds": elapsed}
    finally:
        if sender is not None:
            sender.wait()
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="size received, MiB")
    parser.add_argument("--baseline", default="d3a1c45",
                        help="git revision of the baseline page (default: before issue 19)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    size = args.mib * MiB
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline.html"
        baseline.write_bytes(subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{args.baseline}:pipeserver/index.html"],
            check=True, capture_output=True).stdout)
        rows = [
            (f"page of {args.baseline}", measure(str(baseline), size, chromium)),
            ("this checkout's page", measure(str(ROOT / "pipeserver" / "index.html"), size, chromium)),
        ]
    base = rows[0][1]["peak"] - rows[0][1]["idle"]
    print(f"receiving {args.mib} MiB in the page; Chromium's process tree, resident memory:")
    print(f"{'page':28} {'peak growth':>12} {'x file':>7} {'vs baseline':>12} {'seconds':>8}")
    for name, row in rows:
        growth = row["peak"] - row["idle"]
        print(f"{name:28} {growth / MiB:9.0f} MiB {growth / size:7.2f} "
              f"{growth / base:12.2f} {row['seconds']:8.1f}")


if __name__ == "__main__":
    main()
