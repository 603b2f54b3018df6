"""``?progress`` spectators over a real port with curl (SPEC §13).

The parties are curl processes; so is the spectator (``curl -N``, as a
user watches from a terminal), over HTTP/1.1 and HTTP/2. What it prints is
parsed as Server-Sent Events; the receiver's bytes are checked by sha256.
"""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any, Dict, List, Optional, Tuple

import pytest_twisted
from twisted.internet import defer

import helpers
from helpers import curl

Event = Tuple[str, Dict[str, Any]]

UNAUTHORIZED = (
    "[ERROR] Missing or invalid token.\nPass your project's token: "
    "curl -H 'Authorization: Bearer TOKEN' URL (or curl -u x:TOKEN URL).\n"
)


def parse(text: str) -> List[Event]:
    """The events in what a spectator printed (comments and retry skipped)."""
    out: List[Event] = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        names = [line[7:] for line in lines if line.startswith("event: ")]
        data = [line[6:] for line in lines if line.startswith("data: ")]
        if names:
            out.append((names[0], json.loads(data[0])))
    return out


def marked_file(path: str, size: int) -> Tuple[bytes, str]:
    """A text body (so a leak into the events would be readable) of ``size`` bytes."""
    unit = b"BODY-BYTE-MARKER "
    data = (unit * (size // len(unit) + 1))[:size]
    with open(path, "wb") as f:
        f.write(data)
    return unit, hashlib.sha256(data).hexdigest()


def assert_transfer_events(events: List[Event], size: int, total: Optional[int] = None) -> None:
    """A whole transfer of ``size`` bytes, ``total`` its Content-Length."""
    names = [name for name, _ in events]
    assert names[0] == "waiting" and names[-1] == "done", names
    counts = [data["bytes"] for name, data in events if name == "streaming"]
    assert counts == sorted(counts) and counts[-1] <= size
    done = events[-1][1]
    assert (done["state"], done["bytes"], done["total"], done["receivers"], done["n"]) == (
        "done", size, total, 1, 1)
    for _, data in events:
        assert set(data) <= {"state", "path", "n", "sender", "receivers", "bytes", "total",
                             "seconds", "reason"}


def halves(tmp_path, size: int) -> Tuple[bytes, str, str, str, str]:
    """A marked body of ``size`` bytes in two files, and a gate between them."""
    marker, digest = marked_file(str(tmp_path / "data"), size)
    data = (tmp_path / "data").read_bytes()
    (tmp_path / "first").write_bytes(data[: size // 2])
    (tmp_path / "rest").write_bytes(data[size // 2:])
    return marker, digest, str(tmp_path / "first"), str(tmp_path / "gate"), str(tmp_path / "rest")


def streaming_with(proc, count: int) -> bool:
    return any(name == "streaming" and data["bytes"] == count for name, data in parse(proc.text))


@defer.inlineCallbacks
def stop(server, *spectators):
    """Kill spectators' curls; fires once the server has let them go."""
    for proc in spectators:
        proc.kill()
        yield proc.wait()
    hub = server.site.resource.spectators
    yield helpers.wait_for(lambda: hub.total == 0, what="the spectators to be let go")


@pytest_twisted.inlineCallbacks
def test_a_spectator_watches_a_transfer_with_curl(server, procs, tmp_path):
    size = 1024 * 1024
    marker, digest, first, gate, rest = halves(tmp_path, size)
    watcher = procs.spawn(curl("-f", server.url("/job?progress")), name="spectator")
    yield helpers.wait_for(lambda: b"event: waiting" in watcher.out, what="the first event")
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-f", "-o", out, server.url("/job")))
    yield helpers.wait_for(lambda: b'"receivers":1' in watcher.out, what="the receiver shown")
    # The sender stops halfway until the spectator has seen that half pass.
    _, sender = procs.pipeline(
        helpers.gated(first, gate, rest),
        curl("-f", "-T", "-", server.url("/job")),
    )
    yield helpers.wait_for(lambda: streaming_with(watcher, size // 2), what="half of it shown")
    helpers.open_gate(gate)
    yield sender.wait()
    yield receiver.wait()
    yield watcher.wait()
    assert helpers.file_sha256(out) == digest
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert watcher.exit_code == 0, watcher.describe()
    events = parse(watcher.text)
    assert_transfer_events(events, size)
    # Who was there, as it changed: nobody, then the receiver.
    assert events[:2] == [
        ("waiting", {"state": "waiting", "path": "/job", "n": None, "sender": False,
                     "receivers": 0, "bytes": 0}),
        ("waiting", {"state": "waiting", "path": "/job", "n": 1, "sender": False,
                     "receivers": 1, "bytes": 0}),
    ]
    assert marker not in watcher.out


@pytest_twisted.inlineCallbacks
def test_a_spectator_over_http2_watches_parties_on_http1(server, procs, tmp_path):
    size = 1024 * 1024
    marker, digest, first, gate, rest = halves(tmp_path, size)
    watcher = procs.spawn(
        curl("-f", "--http2-prior-knowledge", "-D", str(tmp_path / "head"),
             server.url("/api/v1/pipe/h2job?progress")),
        name="spectator",
    )
    yield helpers.wait_for(lambda: b"event: waiting" in watcher.out, what="the first event")
    _, sender = procs.pipeline(
        helpers.gated(first, gate, rest),
        curl("-f", "-T", "-", server.url("/h2job")),
    )
    yield server.wait_sender("/h2job")
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-f", "-o", out, server.url("/h2job")))
    yield helpers.wait_for(lambda: streaming_with(watcher, size // 2), what=f"half of it shown")  # DEBUG
    helpers.open_gate(gate)
    yield sender.wait()
    yield receiver.wait()
    yield watcher.wait()
    assert helpers.file_sha256(out) == digest
    assert watcher.exit_code == 0, watcher.describe()
    head = (tmp_path / "head").read_text()
    assert head.startswith("HTTP/2 200")
    assert "content-type: text/event-stream" in head
    assert_transfer_events(parse(watcher.text), size)
    assert marker not in watcher.out


@pytest_twisted.inlineCallbacks
def test_a_latecomer_sees_how_it_ended(server, procs, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    sender = procs.spawn(curl("-f", "-T", str(tmp_path / "empty"), server.url("/late")))
    receiver = procs.spawn(curl("-f", server.url("/late")))
    yield sender.wait()
    yield receiver.wait()
    late = procs.spawn(curl("-f", server.url("/late?progress")))
    yield late.wait()
    assert late.exit_code == 0
    assert parse(late.text) == [("done", {
        "state": "done", "path": "/late", "n": 1, "sender": True, "receivers": 1,
        "bytes": 0, "total": 0, "seconds": parse(late.text)[0][1]["seconds"],
    })]


@pytest_twisted.inlineCallbacks
def test_tokens_apply_as_to_the_pipe(make_server, procs, tmp_path):
    tokens = tmp_path / "tokens"
    token_a, token_b = "progress-alpha-0123456789", "progress-beta-0123456789"
    tokens.write_text("".join(
        f"{project} {hashlib.sha256(token.encode()).hexdigest()}\n"
        for project, token in (("alpha", token_a), ("beta", token_b))))
    server = make_server("--tokens", str(tokens))
    # No token: no events (and nothing about the pipe).
    refused = yield helpers.http("GET", server.url("/t?progress"))
    assert (refused.code, refused.body.decode()) == (401, UNAUTHORIZED)
    assert refused.one("WWW-Authenticate") == 'Bearer realm="pipe"'
    # The page itself is the same for every path and asks for the token.
    page = yield helpers.http("GET", server.url("/t?progress"), headers={"Accept": "text/html"})
    assert page.code == 200 and page.one("Content-Type") == "text/html; charset=utf-8"
    # alpha's receiver waits on /t; beta's spectator of /t sees nobody.
    receiver = procs.spawn(curl("-f", "-H", f"Authorization: Bearer {token_a}", server.url("/t")))
    yield server.wait_receivers("/t", 1)
    beta = procs.spawn(curl("-f", "-u", f"x:{token_b}", server.url("/t?progress")))
    alpha = procs.spawn(curl("-f", "-H", f"Authorization: Bearer {token_a}",
                             server.url("/t?progress")))
    yield helpers.wait_for(lambda: b"event: waiting" in alpha.out and b"event: waiting" in beta.out,
                           what="both spectators' first events")
    assert parse(alpha.text)[0][1]["receivers"] == 1
    assert parse(beta.text)[0][1] == {"state": "waiting", "path": "/t", "n": None,
                                      "sender": False, "receivers": 0, "bytes": 0}
    sender = procs.spawn(curl("-f", "-H", f"Authorization: Bearer {token_a}", "-T", "-",
                              server.url("/t")))
    yield sender.wait()
    yield receiver.wait()
    yield alpha.wait()
    assert parse(alpha.text)[-1][0] == "done"
    assert [name for name, _ in parse(beta.text)] == ["waiting"]
    yield stop(server, beta)


@pytest_twisted.inlineCallbacks
def test_the_idle_timeout_does_not_cut_a_spectator(make_server, procs):
    server = make_server("--idle-timeout", "1")
    watcher = procs.spawn(curl("-f", server.url("/idle?progress")))
    receiver = procs.spawn(curl("-f", server.url("/idle")))
    yield helpers.sleep(2.5)
    assert not watcher.finished, watcher.describe()
    sender = procs.spawn(curl("-f", "-T", "-", server.url("/idle")))
    yield sender.wait()
    yield receiver.wait()
    yield watcher.wait()
    assert watcher.exit_code == 0
    assert parse(watcher.text)[-1][0] == "done"


@pytest_twisted.inlineCallbacks
def test_spectators_are_capped_per_client(make_server, procs):
    server = make_server("--max-waiting-per-client", "1")
    first = procs.spawn(curl("-f", server.url("/a?progress")))
    yield helpers.wait_for(lambda: b"event: waiting" in first.out, what="the first event")
    second = yield helpers.http("GET", server.url("/b?progress"))
    assert (second.code, second.body) == (503, b"[ERROR] Too many spectators from your address.\n")
    assert second.one("Retry-After") == "5"
    yield stop(server, first)


@pytest_twisted.inlineCallbacks
def test_a_spectator_that_never_reads_holds_nothing_back(server, procs, tmp_path):
    """It takes no bytes at all while 64 MiB pass: the transfer completes,
    bytes intact (a full spectator is paused: tests/test_progress.py)."""
    size = 64 * 1024 * 1024
    data = str(tmp_path / "data")
    digest = helpers.make_file(data, size, seed=5)
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.portnum))
    stuck.sendall(b"GET /big?progress HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        out = str(tmp_path / "out")
        receiver = procs.spawn(curl("-f", "-o", out, server.url("/big")))
        sender = procs.spawn(curl("-f", "-T", data, server.url("/big")))
        yield sender.wait(60)
        yield receiver.wait(60)
        assert sender.exit_code == 0 and receiver.exit_code == 0
        assert helpers.file_sha256(out) == digest
    finally:
        stuck.close()
    yield helpers.wait_for(lambda: server.site.resource.spectators.total == 0,
                           what="the spectator to be gone")
