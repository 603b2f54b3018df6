"""The container image (Containerfile, `make image`) and deploy/compose.yaml,
run for real with podman: a pipeserver container, a producer container and a
consumer container that share nothing but the pipe's URL.

No registry is needed: the base is Debian bookworm made by mmdebstrap
(python3, python3-venv, ca-certificates, curl; curl is for the clients),
cached as a tarball between runs, imported and passed to `make image` as
BASE. Everything podman stores (images, containers, networks) lives in one
temporary root, removed at the end; nothing else of the machine's podman is
touched. Skipped loudly where podman, runc or mmdebstrap is missing (and the
compose test where podman-compose is); CI installs them (.ci/run).

PIPESERVER_TEST_CACHE: where the base tarball is kept (default
~/.cache/pipeserver-test). PIPESERVER_TEST_MIRROR: the Debian mirror (default:
the first one apt is configured with).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import warnings
from typing import Dict, Iterator, List, Optional

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
COMPOSE = os.path.join(ROOT, "deploy", "compose.yaml")
SUITE = "bookworm"
INCLUDE = ["python3", "python3-venv", "ca-certificates", "curl"]
#: What the seed's producer sends, and the sha256 every consumer must print.
SEQ = 2_000_000
EXPECTED = hashlib.sha256("".join(f"{i}\n" for i in range(1, SEQ + 1)).encode()).hexdigest()
NETWORK = "pipetest"
UID = "10001"
#: A stop's grace in the drain test: the transfer must end well within it.
GRACE = 20
#: Explicit limits: podman's defaults (nofile and nproc 1048576+) exceed the
#: hard limits of some machines (a sandbox), where runc then cannot start.
ULIMITS = ["nofile=4096:4096", "nproc=4096:4096"]


def _missing() -> List[str]:
    found = {
        "podman": shutil.which("podman"),
        "runc": shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/sbin"),
        "mmdebstrap": shutil.which("mmdebstrap"),
    }
    return [name for name, path in found.items() if path is None]


MISSING = _missing()
if MISSING:
    reason = (
        f"CONTAINER TESTS SKIPPED: {', '.join(MISSING)} not installed "
        f"(apt-get install podman runc mmdebstrap; .ci/run does)"
    )
    warnings.warn(reason)
    pytestmark = pytest.mark.skip(reason=reason)


def debian_mirror() -> str:
    """PIPESERVER_TEST_MIRROR, else the first mirror apt uses for bookworm."""
    if os.environ.get("PIPESERVER_TEST_MIRROR"):
        return os.environ["PIPESERVER_TEST_MIRROR"]
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(
                    line.split(":", 1) for line in stanza.splitlines()
                    if ":" in line and not line.startswith(("#", " "))
                )
                suites = fields.get("Suites", "").split()
                uris = fields.get("URIs", "").split()
                if SUITE in suites and uris and "deb" in fields.get("Types", "").split():
                    return uris[0]
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    words = [w for w in line.split() if not w.startswith("[")]
                    if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                        return words[1]
        except OSError:
            pass
    return "http://deb.debian.org/debian"


def base_tarball() -> str:
    """The mmdebstrap'ed bookworm, made once per include list and kept."""
    cache = os.environ.get("PIPESERVER_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pipeserver-test"
    )
    os.makedirs(cache, exist_ok=True)
    key = hashlib.sha256(f"{SUITE} minbase {','.join(INCLUDE)}".encode()).hexdigest()[:12]
    path = os.path.join(cache, f"base-{SUITE}-{key}.tar")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one mmdebstrap at a time
        if not os.path.exists(path):
            partial = path + ".partial.tar"
            started = time.monotonic()
            run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(INCLUDE),
                 SUITE, partial, debian_mirror()], timeout=600)
            os.rename(partial, path)
            print(f"base tarball made in {time.monotonic() - started:.0f} s: {path}")
    return path


def run(args: List[str], timeout: float = 120, check: bool = True,
        env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None
        ) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                            env=env, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Podman:
    """podman, and podman-compose, on a private root under one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        conf = os.path.join(directory, "containers.conf")
        storage = os.path.join(directory, "storage.conf")
        with open(conf, "w") as f:
            f.write(
                "[containers]\n"
                f"default_ulimits = {json.dumps(ULIMITS)}\n"
                "[engine]\n"
                'runtime = "runc"\n'          # crun: "cgroups in hybrid mode not supported"
                'cgroup_manager = "cgroupfs"\n'  # no systemd
                'events_logger = "file"\n'
                f'tmp_dir = "{directory}/tmp"\n'
                "[network]\n"
                'network_backend = "netavark"\n'  # aardvark-dns: containers by name
                f'network_config_dir = "{directory}/networks"\n'
            )
        with open(storage, "w") as f:
            f.write(
                "[storage]\n"
                'driver = "overlay"\n'
                f'graphroot = "{directory}/root"\n'
                f'runroot = "{directory}/runroot"\n'
            )
        self.env = dict(os.environ, CONTAINERS_CONF=conf, CONTAINERS_STORAGE_CONF=storage)
        self.root = ["--root", f"{directory}/root", "--runroot", f"{directory}/runroot"]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True
                 ) -> subprocess.CompletedProcess:
        return run(["podman", *self.root, *args], timeout=timeout, check=check, env=self.env)

    def out(self, *args: str, timeout: float = 120) -> str:
        return self(*args, timeout=timeout).stdout.strip()

    def logs(self, name: str) -> str:
        result = self("logs", name)
        return result.stdout + result.stderr

    def exit_code(self, name: str, timeout: float = 60) -> int:
        return int(self.out("wait", name, timeout=timeout))


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    directory = tempfile.mkdtemp(prefix="pipeserver-podman-")
    engine = Podman(directory)
    try:
        # Never go on with the machine's own storage: podman-compose finds
        # this root through the environment only.
        info = json.loads(run(["podman", "info", "--format", "json"], env=engine.env).stdout)
        assert info["store"]["graphRoot"] == f"{directory}/root", info["store"]
        yield engine
    finally:
        engine("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        engine("network", "prune", "--force", check=False)
        engine("rmi", "--all", "--force", check=False, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def images(podman: Podman) -> Dict[str, str]:
    """The base (imported from the cached tarball) and the image `make image`
    builds on it."""
    tarball = base_tarball()
    base = "localhost/pipeserver-test-base:" + os.path.basename(tarball).split("-")[-1][:-4]
    started = time.monotonic()
    podman("import", "--change", 'CMD ["/bin/bash"]', tarball, base, timeout=300)
    imported = time.monotonic()
    version = run(["python3", "-c", "import pipeserver; print(pipeserver.__version__)"],
                  cwd=ROOT).stdout.strip()
    run(["make", "-C", ROOT, "image", f"BASE={base}", "ENGINE=podman",
         f"ENGINE_FLAGS={shlex.join(podman.root)}"], env=podman.env, timeout=600)
    print(f"base imported in {imported - started:.1f} s, "
          f"image built in {time.monotonic() - imported:.1f} s")
    tags = podman.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert f"localhost/pipeserver:{version}" in tags and "localhost/pipeserver:latest" in tags
    podman("network", "create", NETWORK)
    return {"base": base, "image": f"localhost/pipeserver:{version}"}


def metrics_port(podman: Podman, name: str) -> int:
    mapping = podman.out("port", name, "9100/tcp")  # "127.0.0.1:PORT"
    return int(mapping.rsplit(":", 1)[1])


def metric(port: int, name: str) -> float:
    """A series of the server's /metrics (unlabelled but for project)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf'^{name}\{{project=""\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def start_server(podman: Podman, images: Dict[str, str], name: str, *env: str) -> int:
    """A pipeserver container reachable as http://NAME:8080 on the network;
    returns the host port of its metrics."""
    podman("run", "--detach", "--name", name, "--network", NETWORK,
           "-e", "PIPE_METRICS_LISTEN=tcp:9100", "-p", "127.0.0.1::9100",
           *[arg for variable in env for arg in ("-e", variable)], images["image"])
    port = metrics_port(podman, name)

    def up() -> bool:
        try:
            return metric(port, "pipeserver_parties_waiting") == 0.0
        except OSError:
            return False

    wait_for(up, 15, f"{name} to serve")
    return port


@pytest.fixture(scope="module")
def server(podman: Podman, images: Dict[str, str]) -> int:
    """`pipe`, the server of the scenario tests; its metrics port."""
    return start_server(podman, images, "pipe", "PIPE_WAIT_TIMEOUT=60")


#: Each client prints the address it reaches the server from (what the server
#: would see) on its first line, then its own output.
WHOAMI = (
    'python3 -c "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); '
    "s.connect((sys.argv[1], 9)); print('address', s.getsockname()[0])\" {host}; "
)


def client(podman: Podman, images: Dict[str, str], name: str, script: str,
           host: str = "pipe") -> str:
    podman("run", "--detach", "--name", name, "--network", NETWORK, images["base"],
           "bash", "-c", "set -euo pipefail; " + WHOAMI.format(host=host) + script)
    return name


def producer(podman, images, name: str, url: str, body: str = f"seq 1 {SEQ}",
             host: str = "pipe") -> str:
    # -D -: the response's headers too, to show what the producer learns.
    return client(podman, images, name, f"{body} | curl -sS -D - -T - {url}", host)


def consumer(podman, images, name: str, url: str, host: str = "pipe") -> str:
    return client(podman, images, name,
                  f"curl -sS -D /tmp/headers {url} | sha256sum; cat /tmp/headers", host)


class Finished:
    def __init__(self, podman: Podman, name: str) -> None:
        self.code = podman.exit_code(name)
        self.output = podman.logs(name)
        first = self.output.splitlines()[0] if self.output else ""
        assert first.startswith("address "), self.output
        self.address = first.split()[1]

    def digest(self) -> str:
        match = re.search(r"^([0-9a-f]{64})  -$", self.output, re.M)
        assert match, self.output
        return match.group(1)


def waiting(port: int, count: int) -> None:
    wait_for(lambda: metric(port, "pipeserver_parties_waiting") == count, 20,
             f"{count} waiting part(ies)")


def check_private(podman: Podman, server_name: str, since_log: str,
                  parties: List[Finished]) -> None:
    """The server's log (from since_log on) carries no party's address, and
    no party's output (response headers, progress lines) another's."""
    log = podman.logs(server_name)[len(since_log):]
    assert "PUT /jobs" in log, log
    for party in parties:
        assert party.address not in log, (party.address, log)
        for other in parties:
            if other is not party and other.address != party.address:
                assert party.address not in other.output, (party.address, other.output)
    assert len({party.address for party in parties}) == len(parties)


def test_image_is_runtime_only_and_runs_as_non_root(podman, images):
    image = json.loads(podman.out("image", "inspect", images["image"]))[0]
    config = image["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] in ("SIGTERM", "15")
    # Kept only in the docker format (`make image` gives --format docker).
    health = image.get("Healthcheck") or config.get("Healthcheck")
    assert health and health["Test"][-2:] == ["pipeserver.environ", "healthcheck"], health
    size = image["Size"]
    base_size = json.loads(podman.out("image", "inspect", images["base"]))[0]["Size"]
    print(f"image {size / 1e6:.0f} MB, {(size - base_size) / 1e6:.0f} MB over its base")
    assert size - base_size < 200e6
    # No pip, no compilers; the server's user owns nothing it runs.
    checks = podman.out(
        "run", "--rm", images["image"], "sh", "-c",
        "id -u; python3 -c 'import pip' 2>/dev/null && echo pip; "
        "for c in gcc cc make; do command -v $c; done; "
        "find /opt/pipeserver -user $(id -u) | head -3; echo end",
    ).split()
    assert checks == [UID, "end"], checks


def test_consumer_first(podman, images, server):
    before = podman.logs("pipe")
    consumer(podman, images, "c-first-consumer", "http://pipe:8080/jobs")
    waiting(server, 1)
    producer(podman, images, "c-first-producer", "http://pipe:8080/jobs")
    received = Finished(podman, "c-first-consumer")
    sent = Finished(podman, "c-first-producer")
    assert (received.code, sent.code) == (0, 0), (received.output, sent.output)
    assert received.digest() == EXPECTED
    assert sent.output.rstrip().endswith(
        "[INFO] All receiver(s) was/were received successfully."), sent.output
    check_private(podman, "pipe", before, [received, sent])


def test_producer_first(podman, images, server):
    before = podman.logs("pipe")
    producer(podman, images, "p-first-producer", "http://pipe:8080/jobs")
    waiting(server, 1)
    consumer(podman, images, "p-first-consumer", "http://pipe:8080/jobs")
    sent = Finished(podman, "p-first-producer")
    received = Finished(podman, "p-first-consumer")
    assert (received.code, sent.code) == (0, 0), (received.output, sent.output)
    assert received.digest() == EXPECTED
    check_private(podman, "pipe", before, [received, sent])


def test_three_consumers(podman, images, server):
    before = podman.logs("pipe")
    producer(podman, images, "n3-producer", "'http://pipe:8080/jobs?n=3'")
    waiting(server, 1)
    for i in range(3):
        consumer(podman, images, f"n3-consumer-{i}", "'http://pipe:8080/jobs?n=3'")
    sent = Finished(podman, "n3-producer")
    received = [Finished(podman, f"n3-consumer-{i}") for i in range(3)]
    assert [r.code for r in received] == [0, 0, 0] and sent.code == 0, sent.output
    assert [r.digest() for r in received] == [EXPECTED] * 3
    assert "[INFO] Start sending to 3 receiver(s)!" in sent.output
    check_private(podman, "pipe", before, [*received, sent])


def test_healthcheck_reports_healthy(podman, images, server):
    podman("healthcheck", "run", "pipe")
    status = podman.out("inspect", "pipe", "--format", "{{.State.Health.Status}}")
    assert status == "healthy"


def test_stop_drains_the_transfer_and_exits_0(podman, images):
    port = start_server(podman, images, "drain", f"PIPE_SHUTDOWN_GRACE={GRACE}")
    consumer(podman, images, "drain-consumer", "http://drain:8080/jobs", host="drain")
    waiting(port, 1)
    # Half the body, a pause in which the server is stopped, the other half.
    producer(podman, images, "drain-producer", "http://drain:8080/jobs",
             body=f"{{ seq 1 {SEQ // 2}; sleep 3; seq {SEQ // 2 + 1} {SEQ}; }}", host="drain")
    wait_for(lambda: metric(port, "pipeserver_pipes_streaming") == 1, 20, "the transfer")
    started = time.monotonic()
    podman("stop", "--time", str(GRACE + 20), "drain", timeout=GRACE + 60)
    took = time.monotonic() - started
    received = Finished(podman, "drain-consumer")
    sent = Finished(podman, "drain-producer")
    log = podman.logs("drain")
    assert (received.code, sent.code) == (0, 0), (received.output, sent.output, log)
    assert received.digest() == EXPECTED
    assert sent.output.rstrip().endswith(
        "[INFO] All receiver(s) was/were received successfully."), sent.output
    assert took < GRACE, f"stop took {took:.1f} s, the grace is {GRACE} s\n{log}"
    assert "Shutting down: 1 pipe(s) open" in log, log
    # twistd re-raises the SIGTERM that stopped it (exit 143); as the
    # container's PID 1 (no --init) the kernel ignores that, and it exits 0.
    code = podman.exit_code("drain")
    assert code == 0, f"the server exited {code} after a clean drain\n{log}"


def test_compose_file(podman, images):
    compose = shutil.which("podman-compose")
    if compose is None:
        message = ("PODMAN-COMPOSE IS NOT INSTALLED: deploy/compose.yaml did not run "
                   "(apt-get install podman-compose; .ci/run does)")
        warnings.warn(message)
        pytest.skip(message)
    port = free_port()
    env = dict(podman.env, PIPE_IMAGE="localhost/pipeserver:latest",
               CLIENT_IMAGE=images["base"], PIPE_PORT=str(port))
    # Given on the command line, --ulimit replaces containers.conf's list.
    run_args = " ".join(f"--ulimit {limit}" for limit in ULIMITS)
    command = [compose, "-p", "pipecompose", "-f", COMPOSE]
    try:
        run([*command, "--podman-run-args", run_args, "up", "-d"], env=env, timeout=180)
        code = podman.exit_code("pipecompose_consumer_1", timeout=60)
        output = podman.logs("pipecompose_consumer_1")
        assert code == 0 and f"{EXPECTED}  -" in output, output
        assert podman.exit_code("pipecompose_producer_1") == 0
        # Published on loopback only.
        assert podman.out("port", "pipecompose_pipe_1", "8080/tcp") == f"127.0.0.1:{port}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as r:
            assert r.status == 200
    finally:
        run([*command, "down"], env=env, timeout=180, check=False)
