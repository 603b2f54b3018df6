# mypy: disable-error-code="assignment,str-bytes-safe"
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
#: Explicit limits, as the README gives them: podman's defaults (nofile
#: 1048576, a large nproc) exceed the hard limits of some machines (this
#: sandbox: nofile 20,000), where runc then cannot start a container. The
#: test's containers.conf sets no default_ulimits, as a user's need not.
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1024:1024"]
README = os.path.join(ROOT, "README.md")


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
    podman("run", "--detach", "--name", name, "--network", NETWORK, *LIMITS,
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
    podman("run", "--detach", "--name", name, "--network", NETWORK, *LIMITS, images["base"],
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
    assert health and health["Test"][-2:] == ["pipeserver.ops.environ", "healthcheck"], health
    size = image["Size"]
    base_size = json.loads(podman.out("image", "inspect", images["base"]))[0]["Size"]
    print(f"image {size / 1e6:.0f} MB, {(size - base_size) / 1e6:.0f} MB over its base")
    assert size - base_size < 200e6
    # No pip, no compilers; the server's user owns nothing it runs.
    checks = podman.out(
        "run", "--rm", *LIMITS, images["image"], "sh", "-c",
        "id -u; python3 -c 'import pip' 2>/dev/null && echo pip; "
        "for c in gcc cc make; do command -v $c; done; "
        "find /opt/pipeserver -user $(id -u) | head -3; echo end",
    ).split()
    assert checks == [UID, "end"], checks


def readme_block(section: str, first: str) -> List[str]:
    """The commands of the README's code block in ``section`` whose first
    line starts with ``first``: continued lines joined, comments dropped."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"(?:^    \S.*\n(?:^     +.*\n)*)+", body, re.M)
    for block in blocks:
        lines = [line[4:] for line in block.splitlines()]
        if "\n".join(lines).startswith(first):
            commands = []
            for line in "\n".join(lines).replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                commands.append(re.sub(r"\s+", " ", command))
            return commands
    raise AssertionError(f"no block starting {first!r} in README section {section!r}")


def sh(podman: Podman, command: str, timeout: float = 300, check: bool = True,
       env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """A README command, run by a shell in the checkout, on the test's podman.
    Its output goes to a file, not a pipe: podman-compose leaves `podman
    start -a` of the server running after it exits, holding its stdout."""
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(["sh", "-c", command], stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout, cwd=ROOT, env=dict(podman.env, **(env or {})))
        out.seek(0)
        result.stdout, result.stderr = out.read().decode(errors="replace"), ""
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}\n{result.stdout[-3000:]}")
    return result


def hard_limits() -> str:
    import resource

    return (f"hard nofile {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}, "
            f"nproc {resource.getrlimit(resource.RLIMIT_NPROC)[1]}")


def test_the_readmes_podman_commands_start_drain_and_stop(podman, images, tmp_path):
    """`podman run` and `podman stop` as the README gives them, on this host
    (whose hard limits are below podman's defaults), through a shell."""
    make, start, stop = readme_block("Run it in a container", "make image")
    assert make.startswith("make image")  # what the `images` fixture ran
    port = free_port()
    published = "-p 127.0.0.1:8080:8080"
    assert published in start and stop == "podman stop -t 40 pipe", (start, stop)
    print(hard_limits())
    sh(podman, start.replace(published, f"-p 127.0.0.1:{port}:8080"))
    try:
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            try:
                with urllib.request.urlopen(url + "/version", timeout=2) as reply:
                    return reply.status == 200
            except OSError:
                return False

        wait_for(serving, 30, "the README's container to serve")
        # A transfer under way when the README's stop comes: it drains.
        # (To a file: a pipe nobody reads until the end would hold it back.)
        received = tmp_path / "received"
        receiver = subprocess.Popen(["curl", "-sS", "--noproxy", "*", "-o", str(received),
                                     url + "/readme"], stderr=subprocess.PIPE)
        sender = subprocess.Popen(
            ["sh", "-c", f"{{ seq 1 {SEQ // 2}; sleep 3; seq {SEQ // 2 + 1} {SEQ}; }} | "
                         f"curl -sS --noproxy '*' -T - {url}/readme"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)
        started = time.monotonic()
        sh(podman, stop, timeout=60)
        took = time.monotonic() - started
        _, err = receiver.communicate(timeout=60)
        sent, _ = sender.communicate(timeout=60)
        out = received.read_bytes()
        log = podman.logs("pipe")
        assert receiver.returncode == 0, (err, log)
        assert hashlib.sha256(out).hexdigest() == EXPECTED
        assert sent.decode().rstrip().endswith(
            "[INFO] All receiver(s) was/were received successfully."), sent
        assert took < 40, f"stop took {took:.1f} s\n{log}"
        assert podman.exit_code("pipe") == 0, log
        # The container got the host's hard limit of open files.
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        assert f"Capacity: {hard - 100:,} file descriptors" in log, log
        assert "Settings: listen=tcp:8080 " in log, log
    finally:
        podman("rm", "--force", "--time", "0", "pipe", check=False)


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


def compose_env(podman: Podman, images: Dict[str, str], **more: str) -> Dict[str, str]:
    return dict(PIPE_IMAGE="localhost/pipeserver:latest", CLIENT_IMAGE=images["base"],
                CLIENT_SHELL="/bin/bash", PIPE_PORT=str(free_port()), **more)


def compose_missing() -> None:
    if shutil.which("podman-compose") is None:
        message = ("PODMAN-COMPOSE IS NOT INSTALLED: deploy/compose.yaml did not run "
                   "(apt-get install podman-compose; .ci/run does)")
        warnings.warn(message)
        pytest.skip(message)


def test_the_readmes_compose_commands_run_the_scenario(podman, images):
    compose_missing()
    make, up, down = readme_block("Run it in a container", "make image\npodman-compose")
    assert up == "podman-compose -f deploy/compose.yaml up --exit-code-from consumer", up
    assert down == "podman-compose -f deploy/compose.yaml down -t 40", down
    env = compose_env(podman, images)
    try:
        result = sh(podman, up, env=env, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert f"{EXPECTED}  -" in output, output[-3000:]
        # Published on loopback only.
        assert podman.out("port", "deploy_pipe_1", "8080/tcp") == f"127.0.0.1:{env['PIPE_PORT']}"
    finally:
        sh(podman, down, env=env, check=False)
    names = podman.out("ps", "--all", "--format", "{{.Names}}").split()
    assert [name for name in names if name.startswith("deploy_")] == [], names


def test_compose_fails_loudly_when_a_service_cannot_start(podman, images):
    """More open files than the host allows: the server's container cannot
    start, and the README's `up` says so with its exit status."""
    compose_missing()
    import resource

    _, up, down = readme_block("Run it in a container", "make image\npodman-compose")
    too_many = str(resource.getrlimit(resource.RLIMIT_NOFILE)[1] * 10)
    env = compose_env(podman, images, PIPE_NOFILE=too_many)
    try:
        result = sh(podman, up, env=env, check=False, timeout=180)
    finally:
        sh(podman, down, env=env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "operation not permitted" in output.lower(), output[-3000:]
    assert EXPECTED not in output


def test_compose_stop_with_the_readmes_timeout_drains_a_transfer(podman, images, tmp_path):
    """podman-compose ignores stop_grace_period; `stop -t 40` (the README's)
    gives the server its grace. The scenario's producer, slowed by a pause
    in the middle of its body, is still sending when the server is stopped;
    podman-compose's own 10 s would cut it."""
    compose_missing()
    with open(COMPOSE, encoding="utf-8") as f:
        text = f.read()
    body = "seq 1 2000000 |"
    assert text.count(body) == 1, text
    grace = 'PIPE_SHUTDOWN_GRACE: "30"'
    assert text.count(grace) == 1, text
    slow = tmp_path / "compose.yaml"
    slow.write_text(text.replace(
        body, f"{{ seq 1 {SEQ // 2}; sleep 15; seq {SEQ // 2 + 1} {SEQ}; }} |"
    ).replace(grace, grace + '\n      PIPE_METRICS_LISTEN: "tcp:9100:interface=127.0.0.1"'))

    def streaming() -> bool:
        script = ("import urllib.request; print(urllib.request.urlopen("
                  "'http://127.0.0.1:9100/metrics').read().decode())")
        result = podman("exec", "slow_pipe_1", "python3", "-c", script, check=False)
        return 'pipeserver_pipes_streaming{project=""} 1.0' in result.stdout

    env = compose_env(podman, images)
    command = f"podman-compose -p slow -f {slow}"
    try:
        sh(podman, f"{command} up -d", env=env)
        wait_for(streaming, 60, "the transfer to start", interval=0.5)
        started = time.monotonic()
        sh(podman, f"{command} stop -t 40 pipe", env=env, timeout=90)
        took = time.monotonic() - started
        log = podman.logs("slow_pipe_1")
        assert podman.exit_code("slow_consumer_1") == 0, podman.logs("slow_consumer_1")
        assert f"{EXPECTED}  -" in podman.logs("slow_consumer_1")
        assert podman.exit_code("slow_producer_1") == 0, podman.logs("slow_producer_1")
        assert podman.exit_code("slow_pipe_1") == 0, log
        assert "Shutting down: 1 pipe(s) open" in log, log
        assert 2 < took < 40, f"stop took {took:.1f} s\n{log}"
    finally:
        sh(podman, f"{command} down -t 40", env=env, check=False)
