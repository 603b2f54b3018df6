#!/usr/bin/env python3
"""N pipeserver instances behind HAProxy, on loopback, in the foreground.

    make cluster N=3                       # or:
    .venv/bin/python deploy/cluster.py -n 3 --port 8080 [-- --wait-timeout 60 ...]

Starts N ``twistd pipe`` instances (127.0.0.1, ports --base-port.., or any
free port with --base-port 0), renders deploy/haproxy.cfg with those N servers
and runs HAProxy in front of them on --port. Every child's output is shown
with a ``[name]`` prefix. Ctrl-C (or SIGTERM) drains: the instances get
SIGTERM (waiting parties are released, transfers get their shutdown grace),
HAProxy a soft stop; a second Ctrl-C kills everything at once. An instance
that dies is reported and the others go on (HAProxy moves its paths to them).

Arguments after ``--`` go to every ``twistd pipe``. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "haproxy.cfg")
STARTING = re.compile(rb"PipeSite starting on (\d+)")
#: HAProxy's health checks, left out of the relayed output unless --show-checks.
CHECK_LINE = re.compile(rb"\[pipeserver\.access#info\] GET /version 200 ")

Server = Tuple[str, str, int]  # name, host, port


# ---------------------------------------------------------------- the config


def render(
    template: str,
    servers: Sequence[Server],
    bind: str,
    check: Optional[str] = None,
    instance_header: bool = False,
) -> str:
    """The template with its servers, frontend bind and (optionally) health
    check timing replaced; ``instance_header`` adds an ``X-Pipe-Instance``
    response header naming the instance that served (for tests and debugging).
    """
    lines = template.splitlines()
    begin = next(i for i, l in enumerate(lines) if l.strip().startswith("# BEGIN servers"))
    end = next(i for i, l in enumerate(lines) if l.strip().startswith("# END servers"))
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    body = [f"{indent}server {name} {host}:{port}" for name, host, port in servers]
    lines = lines[: begin + 1] + body + lines[end:]
    out = []
    for line in lines:
        stripped = line.strip()
        lead = line[: len(line) - len(line.lstrip())]
        if stripped.startswith("bind "):
            out.append(f"{lead}bind {bind}")
            if instance_header:
                out.append(f"{lead}http-response set-header X-Pipe-Instance %s")
            continue
        if check is not None and stripped.startswith("default-server "):
            out.append(f"{lead}default-server check {check}")
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def fit_maxconn(config: str, fd_limit: int) -> Tuple[str, Optional[int]]:
    """HAProxy needs about two descriptors per connection and exits if it
    cannot get them: lower the global ``maxconn`` to what ``fd_limit`` (the
    hard RLIMIT_NOFILE) allows. Returns the config and the new value, if any."""
    found = re.search(r"(?m)^(\s*)maxconn (\d+)\s*$", config)
    if found is None or fd_limit <= 0 or 2 * int(found.group(2)) + 200 <= fd_limit:
        return config, None
    value = max(100, (fd_limit - 200) // 2)
    start, end = found.span()
    return config[:start] + f"{found.group(1)}maxconn {value}" + config[end:], value


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_haproxy(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found is None and os.path.sep not in name:
        for d in ("/usr/sbin", "/usr/local/sbin"):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
    return found


def find_twistd() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return beside if os.access(beside, os.X_OK) else (shutil.which("twistd") or "twistd")


# ---------------------------------------------------------------- children


def _die_with_parent() -> None:
    """In the child: its own session (a terminal's Ctrl-C reaches only us,
    and we stop the children in order), and SIGKILL if we die first."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    def __init__(self, name: str, argv: List[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.partial = b""
        self.seen = b""  # the start of the output, to find the port in
        self.port: Optional[int] = None
        self.reported = False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


class Cluster:
    def __init__(self, out=sys.stdout) -> None:
        self.out = out
        self.children: List[Child] = []
        self.selector = selectors.DefaultSelector()
        self.show_checks = False

    def say(self, text: str) -> None:
        self.out.write(f"[cluster] {text}\n")
        self.out.flush()

    def spawn(self, name: str, argv: List[str]) -> Child:
        child = Child(name, argv)
        self.children.append(child)
        self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)
        return child

    def pump(self, timeout: float) -> None:
        """Relay what the children wrote, for up to ``timeout`` seconds."""
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                self.selector.unregister(key.fileobj)
                if child.partial:
                    self._emit(child, child.partial)
                    child.partial = b""
                continue
            if len(child.seen) < 65536:
                child.seen += data
            *whole, child.partial = (child.partial + data).split(b"\n")
            for line in whole:
                self._emit(child, line)

    def _emit(self, child: Child, line: bytes) -> None:
        if not self.show_checks and CHECK_LINE.search(line):
            return
        self.out.write(f"[{child.name}] {line.decode('utf-8', 'replace')}\n")
        self.out.flush()

    def alive(self) -> List[Child]:
        return [c for c in self.children if c.proc.poll() is None]

    def report_exits(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None and not child.reported:
                child.reported = True
                how = f"signal {-code}" if code < 0 else f"status {code}"
                self.say(f"{child.name} (pid {child.proc.pid}) exited with {how}")


# ---------------------------------------------------------------- main


_signals: List[int] = []


def _on_signal(signum: int, frame) -> None:
    _signals.append(signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    passthrough: List[str] = []
    if "--" in args:
        i = args.index("--")
        args, passthrough = args[:i], args[i + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3, help="instances (default 3)")
    parser.add_argument("--host", default="127.0.0.1", help="address of everything")
    parser.add_argument("--port", type=int, default=8080, help="HAProxy's port (0: any free)")
    parser.add_argument("--base-port", type=int, default=8081,
                        help="first instance's port, the next ones follow (0: any free)")
    parser.add_argument("--haproxy", default="haproxy", help="the haproxy binary")
    parser.add_argument("--template", default=TEMPLATE, help="the HAProxy config template")
    parser.add_argument("--check", default=None,
                        help="health check timing, e.g. 'inter 200ms fall 2 rise 1'")
    parser.add_argument("--instance-header", action="store_true",
                        help="add X-Pipe-Instance (the serving instance) to responses")
    parser.add_argument("--show-checks", action="store_true",
                        help="also show the access lines of HAProxy's health checks")
    parser.add_argument("--config-out", default=None, help="write the rendered config here")
    parser.add_argument("--stop-after", type=float, default=40.0,
                        help="on Ctrl-C, seconds before whatever still runs is killed")
    opts = parser.parse_args(args)
    if opts.n < 1:
        parser.error("-n must be at least 1")

    haproxy = find_haproxy(opts.haproxy)
    if haproxy is None:
        print("cluster: haproxy not found (apt-get install haproxy)", file=sys.stderr)
        return 2

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)

    cluster = Cluster()
    cluster.show_checks = opts.show_checks
    twistd = find_twistd()
    try:
        for i in range(opts.n):
            port = 0 if opts.base_port == 0 else opts.base_port + i
            cluster.spawn(
                f"pipe{i + 1}",
                [twistd, "--nodaemon", "--pidfile=", "--logfile=-", "pipe",
                 "--listen", f"tcp:{port}:interface={opts.host}",
                 # HAProxy connects from here and names the client in
                 # X-Forwarded-For (option forwardfor in haproxy.cfg).
                 "--trusted-proxy", "127.0.0.1", *passthrough],
            )
        deadline = time.monotonic() + 30
        while any(c.port is None for c in cluster.children):
            cluster.pump(0.1)
            for child in cluster.children:
                found = STARTING.search(child.seen)
                if found and child.port is None:
                    child.port = int(found.group(1))
                    cluster.say(f"{child.name} pid={child.proc.pid} listening on "
                                f"{opts.host}:{child.port}")
            if _signals or time.monotonic() > deadline or len(cluster.alive()) < opts.n:
                cluster.report_exits()
                cluster.say("an instance did not start; stopping")
                return _stop(cluster, opts.stop_after, code=1)

        port = opts.port or free_port(opts.host)
        with open(opts.template) as f:
            config = render(
                f.read(),
                [(c.name, opts.host, c.port) for c in cluster.children],  # type: ignore[misc]
                f"{opts.host}:{port}",
                check=opts.check,
                instance_header=opts.instance_header,
            )
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        config, lowered = fit_maxconn(config, -1 if hard == resource.RLIM_INFINITY else hard)
        if lowered is not None:
            cluster.say(f"maxconn lowered to {lowered} to fit the open files limit ({hard})")
        if opts.config_out:
            path = opts.config_out
        else:
            path = os.path.join(tempfile.mkdtemp(prefix="pipe-cluster-"), "haproxy.cfg")
        with open(path, "w") as f:
            f.write(config)
        checked = subprocess.run([haproxy, "-q", "-c", "-f", path],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if checked.returncode != 0:
            cluster.say(f"haproxy rejects {path}:\n{checked.stdout.decode(errors='replace')}")
            return _stop(cluster, opts.stop_after, code=1)
        # -db: stay in the foreground, no daemon, no master process.
        proxy = cluster.spawn("haproxy", [haproxy, "-db", "-f", path])
        ready = time.monotonic() + 10
        while not _answers(opts.host, port):
            cluster.pump(0.05)
            if proxy.proc.poll() is not None or time.monotonic() > ready or _signals:
                cluster.report_exits()
                cluster.say("haproxy did not start; stopping")
                return _stop(cluster, opts.stop_after, code=1)
        backends = ", ".join(f"{c.name}={opts.host}:{c.port}" for c in cluster.children[:-1])
        cluster.say(f"config {path}")
        cluster.say(f"ready: http://{opts.host}:{port}/ -> {backends} (Ctrl-C stops)")

        while not _signals:
            cluster.pump(0.2)
            cluster.report_exits()
            if proxy.proc.poll() is not None:
                cluster.say("haproxy is gone; stopping")
                return _stop(cluster, opts.stop_after, code=1)
        cluster.say("stopping: instances drain (SIGTERM), haproxy stops softly")
        return _stop(cluster, opts.stop_after, code=0)
    except BaseException:
        for child in cluster.children:
            child.signal(signal.SIGKILL)
        raise


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"GET /version HTTP/1.1\r\nHost: cluster\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _stop(cluster: Cluster, stop_after: float, code: int) -> int:
    """SIGTERM the instances (they drain), SIGUSR1 HAProxy (soft stop: no new
    connections, the open ones go on until the instances close them); kill
    what is left at the deadline or on a second signal."""
    first = len(_signals)
    for child in cluster.children:
        child.signal(signal.SIGUSR1 if child.name == "haproxy" else signal.SIGTERM)
    deadline = time.monotonic() + stop_after
    while cluster.alive():
        cluster.pump(0.1)
        cluster.report_exits()
        if len(_signals) > first or time.monotonic() > deadline:
            cluster.say("killing what is left")
            for child in cluster.alive():
                child.signal(signal.SIGKILL)
            for child in cluster.children:
                child.proc.wait()
            break
    # Whatever they wrote last.
    for _ in range(5):
        cluster.pump(0.01)
    cluster.report_exits()
    return code


if __name__ == "__main__":
    sys.exit(main())
