"""The seed product's URL surface (issue 21; SPEC §13) over a real socket:
the health endpoint, the ``/api/v1/pipe/`` prefix, reserved names that
fold, a receiver's own Content-Disposition, and the ``?video`` page.
HTTP/1.1 by curl (``--path-as-is``: curl would otherwise resolve ``.`` and
``..`` itself), HTTP/2 by tests/h2_support.py's h2c client."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource

import pytest
import pytest_twisted

import pipeserver
from h2_support import h2clients  # noqa: F401  (fixture)
from twisted.internet import reactor

from helpers import curl, header_values, sha256, sleep, split_response, wait_for

SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'"
PAGE_CSP = SANDBOX + "; frame-ancestors 'none'"
HEALTH = "/api/v1/pipe/health"
SUCCESS = "[INFO] All receiver(s) was/were received successfully."
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

#: The health object: every key, in order, with its type.
HEALTH_KEYS = [
    ("status", str), ("service", str), ("version", str), ("built", str), ("started", str),
    ("uptime", float), ("pid", int), ("memory", dict), ("fds", int), ("fd_limit", int),
    ("waiting", int), ("active", int),
]


@pytest_twisted.inlineCallbacks
def wire(procs, method, url, *args, stdin=None):
    """One request by curl: status line, headers in wire order, body."""
    flags = ["-I"] if method == "HEAD" else ["-i", "-X", method]
    proc = procs.spawn(curl("--path-as-is", *flags, *args, url), stdin=stdin, name=f"curl {method}")
    yield proc.wait()
    assert proc.exit_code == 0, proc.describe()
    return split_response(bytes(proc.out))


def without(headers, *names):
    drop = {"date", *names}
    return [(n, v) for n, v in headers if n.lower() not in drop]


def check_health(state, waiting=0, active=0, status="ok"):
    """Exact keys, in order, and types; the values we can know."""
    assert [key for key, _ in HEALTH_KEYS] == list(state), state
    for key, kind in HEALTH_KEYS:
        assert type(state[key]) is kind, (key, state[key])
    assert state["status"] == status
    assert state["service"] == "pipeserver"
    assert state["version"] == pipeserver.__version__
    assert ISO.match(state["built"]) and ISO.match(state["started"]), state
    assert state["built"] <= state["started"]
    assert state["uptime"] >= 0
    # The server runs in this very process.
    assert state["pid"] == os.getpid()
    assert list(state["memory"]) == ["rss"] and type(state["memory"]["rss"]) is int
    assert 10 * 2**20 < state["memory"]["rss"] < 4 * 2**30
    open_now = len(os.listdir("/proc/self/fd"))
    assert 3 <= state["fds"] <= open_now + 16, (state["fds"], open_now)
    assert state["fd_limit"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert (state["waiting"], state["active"]) == (waiting, active), state


# ---------------------------------------------------------------- health


@pytest_twisted.inlineCallbacks
def test_health_get_and_head(server, procs):
    status, headers, body = yield wire(procs, "GET", server.url(HEALTH))
    assert status == "HTTP/1.1 200 OK"
    assert without(headers) == [
        ("Server", "pipeserver"),
        ("Content-Type", "application/json"),
        ("Access-Control-Allow-Origin", "*"),
        ("Cache-Control", "no-store"),
        ("Content-Security-Policy", PAGE_CSP),
        ("Content-Length", str(len(body))),
        ("X-Content-Type-Options", "nosniff"),
    ]
    assert body.endswith(b"}\n")
    check_health(json.loads(body))
    head_status, head, head_body = yield wire(procs, "HEAD", server.url(HEALTH))
    assert head_status == status and head_body == b""
    assert without(head) == without(headers)
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_health_counts_waiting_parties_and_transfers(server, procs, tmp_path):
    receiver = procs.spawn(curl(server.url("/w")), name="receiver")
    yield server.wait_receivers("/w", 1)

    state = yield wait_for_health(procs, server, lambda s: s["waiting"] == 1)
    check_health(state, waiting=1)
    # A transfer under way: the sender's body never ends until we say so.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sender = procs.spawn(curl("-T", "-", server.url("/w")), stdin=os.open(fifo, os.O_RDWR), name="sender")
    writer = open(fifo, "wb", buffering=0)
    try:
        writer.write(b"x" * 1000)
        yield wait_for(lambda: server.registry.active() == 1, what="the transfer")
        state = yield wait_for_health(procs, server, lambda s: s["active"] == 1)
        check_health(state, waiting=0, active=1)
    finally:
        writer.close()
    sender.kill()
    yield sender.wait()
    yield receiver.wait()
    yield server.wait_empty()


@pytest_twisted.inlineCallbacks
def wait_for_health(procs, server, predicate, timeout=10.0):
    """Ask the endpoint until ``predicate`` holds (one answer holds a second)."""
    deadline = reactor.seconds() + timeout
    while True:
        _, _, body = yield wire(procs, "GET", server.url(HEALTH))
        state = json.loads(body)
        if predicate(state):
            return state
        if reactor.seconds() > deadline:
            raise AssertionError(f"health never matched: {state}")
        yield sleep(0.2)


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH"])
@pytest_twisted.inlineCallbacks
def test_health_other_methods_are_405(server, procs, method):
    status, headers, body = yield wire(procs, method, server.url(HEALTH), "--data-binary", "x")
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert body == f"[ERROR] Unsupported method: {method}.\n".encode()
    assert header_values(headers, "Allow") == ["GET, HEAD, OPTIONS"]
    assert header_values(headers, "Content-Type") == ["text/plain"]
    assert header_values(headers, "Access-Control-Allow-Origin") == ["*"]
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_health_refuses_an_upload_before_its_body(server, procs):
    """curl -T - waits for 100 Continue: it gets the 405 instead."""
    proc = procs.spawn(curl("-i", "-T", "-", server.url(HEALTH)), stdin=__file__)
    yield proc.wait()
    status, headers, body = split_response(bytes(proc.out))
    assert status == "HTTP/1.1 405 Method Not Allowed", proc.describe()
    assert body == b"[ERROR] Unsupported method: PUT.\n"
    assert header_values(headers, "Allow") == ["GET, HEAD, OPTIONS"]


@pytest_twisted.inlineCallbacks
def test_health_options_is_the_preflight_of_every_path(server, procs):
    _, health, _ = yield wire(procs, "OPTIONS", server.url(HEALTH), "-H", "Origin: https://a.example")
    _, pipe, _ = yield wire(procs, "OPTIONS", server.url("/p"), "-H", "Origin: https://a.example")
    assert without(health) == without(pipe)
    assert header_values(health, "Access-Control-Allow-Methods") == ["GET, HEAD, POST, PUT, OPTIONS"]


@pytest_twisted.inlineCallbacks
def test_health_needs_no_token(make_server, procs, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alpha {hashlib.sha256(b'secret-token').hexdigest()}\n")
    server = make_server("--tokens", str(tokens))
    status, _, body = yield wire(procs, "GET", server.url(HEALTH))
    assert status == "HTTP/1.1 200 OK"
    check_health(json.loads(body))
    status, _, _ = yield wire(procs, "GET", server.url("/api/v1/pipe/jobs"))
    assert status == "HTTP/1.1 401 Unauthorized"


@pytest_twisted.inlineCallbacks
def test_health_says_draining_with_503(server, procs):
    yield server.registry.shutdown(0)
    status, _, body = yield wire(procs, "GET", server.url(HEALTH))
    assert status == "HTTP/1.1 503 Service Unavailable"
    check_health(json.loads(body), status="draining")


@pytest_twisted.inlineCallbacks
def test_bare_health_is_an_ordinary_pipe(server, procs, tmp_path):
    """piping-server's clients may use /health as a pipe: it stays one."""
    body = tmp_path / "body"
    body.write_bytes(os.urandom(100_000))
    receiver = procs.spawn(curl("-f", server.url("/health")), name="receiver")
    yield server.wait_receivers("/health", 1)
    sender = procs.spawn(curl("-f", "-T", "-", server.url("/health")), stdin=str(body))
    yield receiver.wait()
    yield sender.wait()
    assert receiver.sha256 == sha256(body.read_bytes())
    assert sender.lines()[-1] == SUCCESS


@pytest_twisted.inlineCallbacks
def test_health_over_http2(server, h2clients):
    client = yield h2clients.h2c(server.portnum)
    get = client.get(HEALTH)
    head = client.request("HEAD", HEALTH)
    put = client.put(HEALTH, b"x")
    delete = client.request("DELETE", HEALTH)
    bare = client.request("HEAD", "/health")
    for stream in (get, head, put, delete, bare):
        yield stream.wait(15.0)
    assert get.status == 200 and get.ended and get.reset is None, get.describe()
    assert [(n, v) for n, v in get.headers if n != "date"] == [
        ("server", "pipeserver"),
        ("content-type", "application/json"),
        ("access-control-allow-origin", "*"),
        ("cache-control", "no-store"),
        ("content-security-policy", PAGE_CSP),
        ("content-length", str(len(get.body))),
        ("x-content-type-options", "nosniff"),
    ], get.headers
    check_health(json.loads(get.body))
    assert head.status == 200 and head.body == b""
    assert head.one("content-type") == "application/json"
    for stream, method in ((put, "PUT"), (delete, "DELETE")):
        assert stream.status == 405, stream.describe()
        assert stream.one("allow") == "GET, HEAD, OPTIONS"
        assert stream.body == f"[ERROR] Unsupported method: {method}.\n".encode()
    # A bare /health is a pipe path: its HEAD is a pipe's (no JSON).
    assert bare.status == 200 and bare.one("content-type") == "text/plain"
    assert not server.registry.pipes
    client.close()
    yield client.wait_closed()


# ---------------------------------------------------------------- the prefix


@pytest.mark.parametrize("sender_path, receiver_path", [
    ("/api/v1/pipe/jobs", "/jobs"),
    ("/jobs", "/api/v1/pipe/jobs"),
    ("/api/v1/pipe/a/b?n=2", "/a/b?n=2"),
])
@pytest_twisted.inlineCallbacks
def test_prefixed_and_bare_paths_are_one_pipe(server, procs, tmp_path, sender_path, receiver_path):
    body = tmp_path / "body"
    body.write_bytes(os.urandom(300_000))
    n = 2 if "n=2" in sender_path else 1
    receivers = [procs.spawn(curl("-f", server.url(receiver_path)), name=f"r{i}") for i in range(n)]
    yield server.wait_receivers(receiver_path.replace("/api/v1/pipe", ""), n)
    sender = procs.spawn(curl("-f", "-T", "-", server.url(sender_path)), stdin=str(body))
    yield sender.wait()
    for receiver in receivers:
        yield receiver.wait()
        assert receiver.exit_code == 0, receiver.describe()
        assert receiver.sha256 == sha256(body.read_bytes())
    assert sender.lines()[-1] == SUCCESS, sender.describe()


@pytest_twisted.inlineCallbacks
def test_prefixed_pipe_is_named_without_the_prefix(make_server, procs):
    server = make_server("--wait-timeout", "0.5")
    status, _, body = yield wire(procs, "GET", server.url("/api/v1/pipe/late"))
    assert status == "HTTP/1.1 504 Gateway Time-out"
    assert body == b"[ERROR] No sender arrived on '/late' within 0.5 seconds.\n"


@pytest.mark.parametrize("path", ["/api/v1/pipe", "/api/v1/pipe/"])
@pytest_twisted.inlineCallbacks
def test_prefix_alone_serves_the_page(server, procs, path):
    _, index, index_body = yield wire(procs, "GET", server.url("/"))
    status, headers, body = yield wire(procs, "GET", server.url(path))
    assert status == "HTTP/1.1 200 OK"
    assert body == index_body and b"<html" in body.lower()
    assert without(headers) == without(index)
    assert not server.registry.pipes


@pytest.mark.parametrize("path, page", [
    ("/api/v1/pipe/help", "/help"),
    ("/api/v1/pipe/version", "/version"),
    ("/api/v1/pipe/noscript", "/noscript"),
    ("/api/v1/pipe/robots.txt", "/robots.txt"),
])
@pytest_twisted.inlineCallbacks
def test_reserved_names_under_the_prefix(server, procs, path, page):
    want_status, want, want_body = yield wire(procs, "GET", server.url(page))
    status, headers, body = yield wire(procs, "GET", server.url(path))
    assert (status, body) == (want_status, want_body)
    for method in ("PUT", "POST"):
        status, _, body = yield wire(procs, method, server.url(path), "--data-binary", "x")
        assert status == "HTTP/1.1 400 Bad Request"
        assert body == f"[ERROR] Cannot send to the reserved path '{page}'. (e.g. '/mypath123')\n".encode()
    assert not server.registry.pipes


# ---------------------------------------------------------------- folding

#: Each form, and the name it folds to.
FOLDED = [
    ("/Help", "/help"), ("/HELP", "/help"), ("/help/", "/help"), ("/help.", "/help"),
    ("/help%2e", "/help"), ("/help%2E", "/help"), ("/%68elp", "/help"), ("/%48ELP", "/help"),
    ("/help%2f", "/help"), ("//help", "/help"), ("/./help", "/help"), ("/x/../help", "/help"),
    ("/help%252e", "/help"), ("/%EF%BD%88elp", "/help"),  # fullwidth h (NFKC)
    ("/Version/", "/version"), ("/NoScript.", "/noscript"), ("/Favicon.ICO", "/favicon.ico"),
    ("/robots.txt/", "/robots.txt"), ("//", "/"), ("/.", "/"), ("/%2e", "/"),
    ("/api/v1/pipe/Help", "/help"), ("/API/V1/PIPE/help/", "/help"), ("/api/v1/pipe/.", "/"),
]


@pytest.mark.parametrize("form, name", FOLDED)
@pytest_twisted.inlineCallbacks
def test_folded_reserved_names_are_refused_for_sending(server, procs, form, name):
    want = f"[ERROR] Cannot send to the reserved path '{name}'. (e.g. '/mypath123')\n".encode()
    for method in ("PUT", "POST"):
        status, headers, body = yield wire(procs, method, server.url(form), "--data-binary", "x")
        assert status == "HTTP/1.1 400 Bad Request", (method, form)
        assert body == want
    # And curl -T - (Expect: 100-continue) is refused before its body.
    proc = procs.spawn(curl("--path-as-is", "-T", "-", server.url(form)), stdin=__file__)
    yield proc.wait()
    assert bytes(proc.out) == want
    assert not server.registry.pipes


@pytest.mark.parametrize("form, name", FOLDED)
@pytest_twisted.inlineCallbacks
def test_folded_reserved_names_get_the_page(server, procs, form, name):
    """A GET of a folded form is the page: a pipe there could never get a
    sender, so a receiver would only wait for its deadline."""
    want_status, want, want_body = yield wire(procs, "GET", server.url(name))
    status, headers, body = yield wire(procs, "GET", server.url(form))
    assert (status, body) == (want_status, want_body)
    assert without(headers) == without(want)
    assert not server.registry.pipes


@pytest.mark.parametrize("path", ["/helpx", "/help/x", "/x/help", "/.help", "/api/v1/pipex/help", "/jobs/"])
@pytest_twisted.inlineCallbacks
def test_names_near_reserved_ones_are_pipes(server, procs, path):
    receiver = procs.spawn(curl("--path-as-is", "-f", server.url(path)))
    yield server.wait_receivers(path, 1)
    sender = procs.spawn(curl("--path-as-is", "-f", "--data-binary", "near", server.url(path)))
    yield receiver.wait()
    yield sender.wait()
    assert bytes(receiver.out) == b"near"
    assert sender.lines()[-1] == SUCCESS


# ---------------------------------------------------------------- download=, filename=

#: A hostile (or merely foreign) name, percent-encoded as a client sends
#: it, and the Content-Disposition its receiver must get.
NAMES = [
    ("report.pdf", 'attachment; filename="report.pdf"'),
    ("..%2F..%2Fetc%2Fpasswd", 'attachment; filename="_.._etc_passwd"'),
    ("..%5C..%5Cboot.ini", 'attachment; filename="_.._boot.ini"'),
    ("a%22b.txt", 'attachment; filename="a\\"b.txt"'),
    ("r%C3%A9sum%C3%A9.pdf",
     "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"),
    ("%E6%97%A5%E6%9C%AC%E8%AA%9E.txt",
     "attachment; filename=\"___.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.txt"),
    ("evil%E2%80%AEtxt.exe", 'attachment; filename="eviltxt.exe"'),  # right-to-left override
    ("zero%E2%80%8Bwidth", 'attachment; filename="zerowidth"'),
    ("a%0D%0ASet-Cookie:%20x=1", 'attachment; filename="aSet-Cookie: x=1"'),
    ("a%00b%1Bc%7Fd", 'attachment; filename="abcd"'),
    ("100%25.txt", "attachment; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt"),
    ("%FF.bin", 'attachment; filename="_.bin"'),
    ("%20.hidden%20", 'attachment; filename="hidden"'),
    ("semi%3Bcolon%3D1.txt", 'attachment; filename="semi;colon=1.txt"'),
    ("..", 'attachment; filename="orig.txt"'),  # nothing left: the sender's name
    ("x" * 300 + ".txt", 'attachment; filename="' + "x" * 251 + '.txt"'),
]
ASKED = [
    ("", 'inline; filename="orig.txt"'),  # nothing asked: the sender's own
    ("download=1", 'attachment; filename="orig.txt"'),
    ("download=0", 'inline; filename="orig.txt"'),
    ("download=0&filename=x.txt", 'inline; filename="x.txt"'),
    ("download=1&filename=y.txt", 'attachment; filename="y.txt"'),
] + [(f"filename={quoted}", want) for quoted, want in NAMES]


@pytest_twisted.inlineCallbacks
def test_each_receiver_gets_the_disposition_it_asked_for(server, procs, tmp_path):
    n = len(ASKED)
    body = tmp_path / "body"
    body.write_bytes(os.urandom(200_000))
    receivers = []
    for i, (query, _) in enumerate(ASKED):
        url = server.url(f"/d?n={n}" + (f"&{query}" if query else ""))
        receivers.append(procs.spawn(curl("-f", "-D", str(tmp_path / f"h{i}"), url), name=f"r{i}"))
    yield server.wait_receivers("/d", n)
    sender = procs.spawn(
        curl("-f", "-H", 'Content-Disposition: inline; filename="orig.txt"',
             "-H", "Content-Type: text/plain", "-T", "-", server.url(f"/d?n={n}")),
        stdin=str(body),
    )
    yield sender.wait()
    assert sender.lines()[-1] == SUCCESS, sender.describe()
    digest = sha256(body.read_bytes())
    for i, ((query, want), receiver) in enumerate(zip(ASKED, receivers)):
        yield receiver.wait()
        assert receiver.sha256 == digest, query
        _, headers, _ = split_response((tmp_path / f"h{i}").read_bytes() + b"\r\n\r\n")
        assert header_values(headers, "Content-Disposition") == [want], query
        # In the sender's place: after the Content-Type, before the CORS pair.
        names = [name for name, _ in headers]
        assert names.index("Content-Disposition") == names.index("Content-Type") + 1, names


@pytest_twisted.inlineCallbacks
def test_download_without_a_sender_disposition(server, procs):
    receiver = procs.spawn(curl("-i", server.url("/e?download=1")))
    other = procs.spawn(curl("-i", server.url("/f?filename=a.bin")))
    yield server.wait_receivers("/e", 1)
    yield server.wait_receivers("/f", 1)
    for path in ("/e", "/f"):
        sender = procs.spawn(curl("-f", "--data-binary", "abc", server.url(path)))
        yield sender.wait()
    yield receiver.wait()
    yield other.wait()
    _, headers, body = split_response(bytes(receiver.out))
    assert body == b"abc"
    assert header_values(headers, "Content-Disposition") == ["attachment"]
    # Content-Type and Content-Length come first (from the sender's POST).
    names = [name for name, _ in headers]
    assert names.index("Content-Disposition") == names.index("Content-Type") + 1
    _, headers, _ = split_response(bytes(other.out))
    assert header_values(headers, "Content-Disposition") == ['attachment; filename="a.bin"']


@pytest.mark.parametrize("value", ["yes", "2", "true", "-1"])
@pytest_twisted.inlineCallbacks
def test_download_must_be_1_or_0(server, procs, value):
    status, headers, body = yield wire(procs, "GET", server.url(f"/g?download={value}"))
    assert status == "HTTP/1.1 400 Bad Request"
    assert body == b'[ERROR] Invalid query parameter "download": give 1 (attachment) or 0 (inline)\n'
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_download_over_http2(server, h2clients):
    client = yield h2clients.h2c(server.portnum)
    plain = client.get("/h2d?n=2")
    named = client.get("/h2d?n=2&filename=r%C3%A9sum%C3%A9.pdf")
    yield server.wait_receivers("/h2d", 2)
    sender = client.put("/h2d?n=2", b"pdf bytes", headers=[("content-disposition", "inline")])
    for stream in (plain, named, sender):
        yield stream.wait(15.0)
    assert plain.body == named.body == b"pdf bytes"
    assert plain.values("content-disposition") == ["inline"]
    assert named.values("content-disposition") == [
        "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    ]
    client.close()
    yield client.wait_closed()


# ---------------------------------------------------------------- ?video

VIDEO_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; media-src blob:; "
    "style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@pytest.mark.parametrize("path", ["/screen?video", "/screen?n=2&video", "/api/v1/pipe/screen?video=video/webm"])
@pytest_twisted.inlineCallbacks
def test_video_page_never_joins_the_pipe(server, procs, path):
    status, headers, body = yield wire(procs, "GET", server.url(path))
    assert status == "HTTP/1.1 200 OK"
    assert without(headers) == [
        ("Server", "pipeserver"),
        ("Content-Type", "text/html; charset=utf-8"),
        ("Access-Control-Allow-Origin", "*"),
        ("Content-Security-Policy", VIDEO_CSP),
        ("Cache-Control", "no-cache"),
        ("Content-Length", str(len(body))),
        ("X-Content-Type-Options", "nosniff"),
    ]
    # Our script, from this server; nothing inline (the policy forbids it).
    assert re.findall(rb"<script[^>]*>", body) == [b'<script src="/api/v1/pipe/video.js">']
    assert b"</script>" in body and b"<video" in body
    head_status, head, head_body = yield wire(procs, "HEAD", server.url(path))
    assert (head_status, head_body) == (status, b"")
    assert without(head) == without(headers)
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_video_script(server, procs):
    status, headers, body = yield wire(procs, "GET", server.url("/api/v1/pipe/video.js"))
    assert status == "HTTP/1.1 200 OK"
    assert header_values(headers, "Content-Type") == ["text/javascript; charset=utf-8"]
    assert b"MediaSource" in body and b"appendBuffer" in body
    status, _, body = yield wire(procs, "PUT", server.url("/api/v1/pipe/video.js"), "--data-binary", "x")
    assert status == "HTTP/1.1 400 Bad Request"
    assert body == b"[ERROR] Cannot send to the reserved path '/api/v1/pipe/video.js'. (e.g. '/mypath123')\n"
    status, _, body = yield wire(procs, "GET", server.url("/api/v1/pipe/video.js"), "-H", "Service-Worker: script")
    assert body == b"[ERROR] Service Worker registration is rejected.\n"
    # Bare, it is an ordinary pipe path: a sender may use it.
    receiver = procs.spawn(curl("-f", server.url("/video.js")))
    yield server.wait_receivers("/video.js", 1)
    sender = procs.spawn(curl("-f", "--data-binary", "js", server.url("/video.js")))
    yield receiver.wait()
    yield sender.wait()
    assert bytes(receiver.out) == b"js"


# ---------------------------------------------------------------- /help


@pytest_twisted.inlineCallbacks
def test_help_has_a_line_for_each(server, procs):
    _, _, body = yield wire(procs, "GET", server.url("/help"))
    base = f"http://{server.host}"
    lines = body.decode().splitlines()
    for line in [
        f"curl -OJ '{base}/mypath?filename=report.pdf'",
        f"{base}/mypath?download=0",
        "ffmpeg -re -i movie.mp4 -c:v libvpx -deadline realtime -b:v 1M -f webm - "
        f"| curl -T - {base}/screen",
        f"{base}/screen?video",
        f"curl -N '{base}/mypath?progress'",
        f"curl {base}/api/v1/pipe/health         # JSON: status, version, fds, waiting, active...",
        f"curl -T - {base}/api/v1/pipe/mypath    # the same pipe as {base}/mypath",
        f"curl -T - {base}/Help                  # refused, as /help is",
    ]:
        assert line in lines, line
