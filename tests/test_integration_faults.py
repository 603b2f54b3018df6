"""Parties that go away, deadlines, and forms, with real curl clients (SPEC §3-§5).

Mid-stream faults are made deterministic with a gated producer: it writes a
first file, waits for the test to create a gate file, then writes the rest.
So "mid-stream" means "the receivers have the first part, the rest is held".
"""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import task

import hangup_support as hangup
from h2_support import h2clients  # noqa: F401  (fixture)
from helpers import (
    CURL_PARTIAL_FILE,
    curl,
    file_has,
    gated,
    has_received,
    header_values,
    trickled,
    http,
    make_file,
    open_gate,
    sleep,
    split_response,
    wait_for,
)

FIRST = 300_000
REST = 200_000


def parts(tmp_path):
    first, rest = str(tmp_path / "first"), str(tmp_path / "rest")
    make_file(first, FIRST, seed=1)
    make_file(rest, REST, seed=2)
    with open(first, "rb") as a, open(rest, "rb") as b:
        whole = a.read() + b.read()
    return first, rest, str(tmp_path / "gate"), whole


def halves(whole):
    return whole[:FIRST], whole[FIRST:]


def sender_args(body: str, url: str):
    if body == "chunked":
        return curl("-T", "-", url)
    # Content-Length from a pipe: curl sends the stream raw with this length.
    return curl("-T", "-", "-H", "Transfer-Encoding:", "-H", f"Content-Length: {FIRST + REST}", url)


@pytest_twisted.inlineCallbacks
def pair_works(server, procs, path, tmp_path):
    """A fresh sender and receiver on ``path`` complete a transfer."""
    src = str(tmp_path / "again")
    expected = make_file(src, 50_000, seed=9)
    receiver = procs.spawn(curl(server.url(path)), name="new receiver")
    sender = procs.spawn(curl("-T", src, server.url(path)), name="new sender")
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0 and receiver.sha256 == expected, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    yield server.wait_gone(path)


@pytest.mark.parametrize("body", ["chunked", "length"])
@pytest_twisted.inlineCallbacks
def test_sender_killed_mid_stream(server, procs, tmp_path, body):
    first, rest, gate, whole = parts(tmp_path)
    url = server.url("/p")
    receiver = procs.spawn(curl("-D", "-", url), name="receiver")
    yield server.wait_receivers("/p", 1)
    gen, sender = procs.pipeline(gated(first, gate, rest), sender_args(body, url))
    yield wait_for(lambda: b"\r\n\r\n" in receiver.out)
    headerlen = bytes(receiver.out).index(b"\r\n\r\n") + 4
    yield has_received(receiver, headerlen + FIRST)
    sender.kill()
    yield receiver.wait()
    assert receiver.exit_code == CURL_PARTIAL_FILE, receiver.describe()
    status, headers, data = split_response(bytes(receiver.out))
    if body == "chunked":
        assert header_values(headers, "Transfer-Encoding") == ["chunked"]
    else:
        assert header_values(headers, "Content-Length") == [str(FIRST + REST)]
    assert data == whole[:FIRST]
    yield server.wait_empty()
    gen.kill()
    yield gen.wait()
    yield pair_works(server, procs, "/p", tmp_path)


@pytest.mark.parametrize("body", ["chunked", "length"])
@pytest_twisted.inlineCallbacks
def test_only_receiver_killed(server, procs, tmp_path, body):
    first, rest, gate, whole = parts(tmp_path)
    url = server.url("/p")
    if body == "chunked":
        # Trickles while the gate is shut, so curl keeps reading the response.
        gen, sender = procs.pipeline(gated(first, gate, rest, trickle=True), curl("-T", "-", url))
    else:
        big = str(tmp_path / "big")
        make_file(big, 32 * 1024 * 1024, seed=3)
        gen, sender = None, procs.spawn(curl("-T", big, url), name="sender")
    yield server.wait_sender("/p")
    # A slow receiver, so the body is far from its end when it is killed.
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("--limit-rate", "1M", "-o", out, url), name="receiver")
    yield file_has(out, FIRST)
    receiver.kill()
    yield sender.wait()
    assert sender.exit_code != 0, sender.describe()
    assert sender.lines() == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] A receiver was connected.",
        "[INFO] Start sending to 1 receiver(s)!",
        "[INFO] A receiver aborted.",
        "[INFO] All receiver(s) was/were aborted halfway.",
    ], sender.describe()
    yield server.wait_empty()
    if gen is not None:
        gen.kill()
        yield gen.wait()
    yield pair_works(server, procs, "/p", tmp_path)


@pytest.mark.parametrize("kind", hangup.READERS)
@pytest_twisted.inlineCallbacks
def test_only_receiver_hanging_up_while_its_sender_is_quiet(
    server, procs, h2clients, tmp_path, kind
):
    # Its sender pauses (sends nothing for a while, but has not ended): no
    # byte is written to the receiver, so only its connection says it left.
    reader = yield hangup.reader(kind, server, procs, h2clients, "/p")
    yield server.wait_receivers("/p", 1)
    sender = yield hangup.quiet_sender(server.portnum, "/p", b"first part\n")
    yield wait_for(lambda: reader.got().endswith(b"first part\n"), 10, what="the first part")
    reader.hang_up()
    yield sender.wait_closed(5, "the sender to be told and closed")
    response = sender.response()
    assert not response.complete, "the sender's response must show the failure"
    assert response.text.splitlines() == [
        "[INFO] Waiting for 1 receiver(s)...",
        "[INFO] 1 receiver(s) has/have been connected.",
        "[INFO] Start sending to 1 receiver(s)!",
        "[INFO] A receiver aborted.",
        "[INFO] All receiver(s) was/were aborted halfway.",
    ]
    yield server.wait_empty()
    yield pair_works(server, procs, "/p", tmp_path)


@pytest_twisted.inlineCallbacks
def test_one_of_three_receivers_killed(server, procs, tmp_path):
    first, rest, gate, whole = parts(tmp_path)
    url = server.url("/p?n=3")
    receivers = [procs.spawn(curl(url), name=f"receiver{i}") for i in range(3)]
    yield server.wait_receivers("/p", 3)
    gen, sender = procs.pipeline(
        gated(first, gate, rest, trickle=True), curl("-T", "-", url)
    )
    for receiver in receivers:
        yield has_received(receiver, FIRST)
    receivers[1].kill()
    yield wait_for(lambda: "[INFO] A receiver aborted.\n" in sender.text)
    open_gate(gate)
    for receiver in (receivers[0], receivers[2]):
        yield receiver.wait()
        assert receiver.exit_code == 0, receiver.describe()
        assert trickled(bytes(receiver.out), *halves(whole))
    assert receivers[0].sha256 == receivers[2].sha256
    yield sender.wait()
    assert sender.exit_code == 0, sender.describe()
    assert sender.lines() == [
        "[INFO] Waiting for 3 receiver(s)...",
        "[INFO] 3 receiver(s) has/have been connected.",
        "[INFO] Start sending to 3 receiver(s)!",
        "[INFO] A receiver aborted.",
        "[INFO] Sent successfully!",
        "[INFO] 2 of 3 receiver(s) received successfully.",
    ], sender.describe()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def test_waiting_receiver_leaving_frees_its_place(server, procs, tmp_path):
    receiver = procs.spawn(curl(server.url("/p?n=2")), name="receiver")
    yield server.wait_receivers("/p", 1)
    receiver.kill()
    yield receiver.wait()
    yield server.wait_gone("/p")
    # With the old pipe gone, n=1 is accepted (it would be a mismatch otherwise).
    yield pair_works(server, procs, "/p", tmp_path)


@pytest.mark.parametrize(
    "producer",
    [
        # Body still open: the server has paused reading it.
        "head -c 10000 /dev/zero; sleep 30",
        # Body complete, only the response is awaited.
        "head -c 10000 /dev/zero",
    ],
    ids=["open-body", "complete-body"],
)
@pytest_twisted.inlineCallbacks
def test_waiting_sender_leaving_frees_its_place(server, procs, tmp_path, producer):
    gen, sender = procs.pipeline(["sh", "-c", producer], curl("-T", "-", server.url("/p")))
    yield server.wait_sender("/p")
    yield wait_for(lambda: sender.text == "[INFO] Waiting for 1 receiver(s)...\n")
    sender.kill()
    yield sender.wait()
    yield server.wait_gone("/p", timeout=5)
    gen.kill()
    yield gen.wait()
    yield pair_works(server, procs, "/p", tmp_path)


@pytest_twisted.inlineCallbacks
def test_deadline_releases_waiting_receiver(make_server, procs, tmp_path):
    server = make_server("--wait-timeout", "1")
    reply = yield http("GET", server.url("/p"), timeout=10)
    assert reply.code == 504
    assert reply.one("Content-Type") == "text/plain"
    assert reply.one("Access-Control-Allow-Origin") == "*"
    assert reply.body == b"[ERROR] No sender arrived on '/p' within 1 seconds.\n"
    assert not server.registry.pipes
    yield pair_works(server, procs, "/p", tmp_path)


@pytest.mark.parametrize(
    "producer",
    [
        "head -c 1000 /dev/zero",
        # The body goes on (slowly): curl reads stdin with a blocking read(),
        # so a silent stdin would keep it from noticing the server's close.
        "head -c 1000 /dev/zero; while :; do printf .; sleep 0.02; done",
    ],
    ids=["complete-body", "open-body"],
)
@pytest_twisted.inlineCallbacks
def test_deadline_releases_waiting_sender(make_server, procs, tmp_path, producer):
    server = make_server("--wait-timeout", "1")
    gen, sender = procs.pipeline(["sh", "-c", producer], curl("-T", "-", server.url("/p")))
    yield sender.wait(timeout=15)
    assert sender.exit_code != 0, sender.describe()
    assert sender.text == (
        "[INFO] Waiting for 1 receiver(s)...\n"
        "[ERROR] Not all receivers arrived on '/p' within 1 seconds.\n"
    ), sender.describe()
    assert not server.registry.pipes
    gen.kill()
    yield gen.wait()
    yield pair_works(server, procs, "/p", tmp_path)


@pytest_twisted.inlineCallbacks
def test_deadline_releases_everyone_on_the_pipe(make_server, procs, tmp_path):
    server = make_server("--wait-timeout", "1")
    receiver = procs.spawn(curl("-D", "-", server.url("/p?n=2")), name="receiver")
    yield server.wait_receivers("/p", 1)
    sender = procs.spawn(curl("-T", "-", server.url("/p?n=2")), stdin=os.devnull, name="sender")
    yield receiver.wait(timeout=15)
    yield sender.wait(timeout=15)
    text = "[ERROR] Not all receivers arrived on '/p' within 1 seconds.\n"
    status, headers, body = split_response(bytes(receiver.out))
    assert status == "HTTP/1.1 504 Gateway Time-out", status
    assert header_values(headers, "Content-Type") == ["text/plain"]
    assert body == text.encode()
    assert sender.exit_code != 0, sender.describe()
    assert sender.text == (
        "[INFO] Waiting for 2 receiver(s)...\n"
        "[INFO] 1 receiver(s) has/have been connected.\n" + text
    )
    assert not server.registry.pipes


class OnClock:
    """The reactor as the site sees it, its time (``seconds``,
    ``callLater``) on ``clock``."""

    def __init__(self, reactor, clock: task.Clock) -> None:
        self._reactor = reactor
        self.seconds = clock.seconds
        self.callLater = clock.callLater

    def __getattr__(self, name: str):
        return getattr(self._reactor, name)


@pytest_twisted.inlineCallbacks
def test_timeouts_never_cut_waiting_or_streaming_parties(make_server, procs, tmp_path):
    """Past the idle timeout and the rendezvous deadline, an established
    transfer that stalls goes on; a party waiting past the idle timeout stays."""
    server = make_server("--wait-timeout", "2.5", "--idle-timeout", "0.5")
    # Both timeouts on a Clock the test moves: the site's idle timeout
    # (its callLater) and the pipes' deadline (the registry's clock).
    clock = task.Clock()
    server.site.reactor = OnClock(server.site.reactor, clock)
    server.registry.clock = clock
    first, rest, gate, whole = parts(tmp_path)
    url = server.url("/p")
    gen, sender = procs.pipeline(gated(first, gate, rest), curl("-T", "-", url))
    yield server.wait_sender("/p")
    clock.advance(1.0)  # waiting past the idle timeout
    assert server.pipe("/p").sender is not None and not sender.finished
    receiver = procs.spawn(curl(url), name="receiver")
    yield has_received(receiver, FIRST)
    clock.advance(3.0)  # stalled past the idle timeout and the deadline
    assert server.pipe("/p").state.name == "STREAMING"
    open_gate(gate)
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert bytes(receiver.out) == whole
    assert sender.exit_code == 0, sender.describe()
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."


@pytest.mark.parametrize(
    "part, ctype",
    [
        ("file=@{src}", "application/octet-stream"),
        ("file=@{src};type=text/html;filename=x.html", "text/plain"),
        ("file=@{src};type=image/png", "image/png"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_multipart_form_delivers_the_file(server, procs, tmp_path, part, ctype):
    src = str(tmp_path / "photo.bin")
    expected = make_file(src, 1_500_000, seed=4)
    url = server.url("/form")
    receiver = procs.spawn(curl("-D", "-", url), name="receiver")
    yield server.wait_receivers("/form", 1)
    sender = procs.spawn(
        curl("-F", part.format(src=src), "-F", "other=ignored", url), name="sender"
    )
    yield receiver.wait()
    yield sender.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert sender.exit_code == 0, sender.describe()
    status, headers, data = split_response(bytes(receiver.out))
    assert status == "HTTP/1.1 200 OK"
    assert len(data) == 1_500_000
    assert hashlib.sha256(data).hexdigest() == expected
    assert header_values(headers, "Content-Type") == [ctype]
    filename = "x.html" if "filename=x.html" in part else "photo.bin"
    assert header_values(headers, "Content-Disposition") == [
        f'form-data; name="file"; filename="{filename}"'
    ]
    assert header_values(headers, "Content-Length") == []
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
