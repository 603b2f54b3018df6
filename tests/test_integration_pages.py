# mypy: disable-error-code="arg-type,override,union-attr,var-annotated"
"""Reserved paths, CORS preflight and HEAD over a real socket (SPEC §7)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

import pipeserver
from twisted.logger import formatEvent, globalLogPublisher

from helpers import curl, header_values, http, split_response, with_timeout

#: Every response: no version in Server, no sniffing, and (unless the page
#: has a policy of its own) a sandbox that loads nothing.
SERVER = [("Server", "pipeserver")]
SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'"
SAFE = [("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", SANDBOX)]
PAGE_CSP = SANDBOX + "; frame-ancestors 'none'"


@pytest_twisted.inlineCallbacks
def wire(procs, method, url, *args):
    """One request by curl: status line, headers in wire order, body."""
    if method == "HEAD":
        flags = ["-I"]
    else:
        flags = ["-i", "-X", method]
    proc = procs.spawn(curl(*flags, *args, url), name=f"curl {method}")
    yield proc.wait()
    assert proc.exit_code == 0, proc.describe()
    return split_response(bytes(proc.out))


def without_date(headers):
    """Headers in wire order, without Date (it changes), Server moved last."""
    kept = [(n, v) for n, v in headers if n.lower() not in ("date", "server")]
    return kept + [(n, v) for n, v in headers if n.lower() == "server"]


@pytest_twisted.inlineCallbacks
def test_index(server):
    reply = yield http("GET", server.url("/"))
    assert reply.code == 200
    assert b"<html" in reply.body.lower()
    assert b"/mypath" in reply.body
    # No order between the sides is suggested: either may come first.
    assert b"must be there" not in reply.body
    assert b"Either side may start first: it waits\nfor the other" in reply.body
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_noscript(server):
    reply = yield http("GET", server.url("/noscript"))
    assert reply.code == 200
    body = reply.body.lower()
    assert b"<form" in body and b"multipart/form-data" in body
    assert b"<script" not in body
    # A phone lays it out at its own width, and each form says what it is for.
    assert b'<meta name="viewport" content="width=device-width, initial-scale=1">' in body
    assert b"<h2>1. where to, and what</h2>" in body and b"<h2>2. send</h2>" in body
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_help_uses_request_host(server):
    reply = yield http("GET", server.url("/help"))
    assert reply.code == 200
    text = reply.body.decode()
    base = f"http://{server.host}"
    assert f"curl {base}/mypath\n" in text
    assert f"curl -T - {base}/mypath\n" in text
    assert f"curl -T myfile {base}/mypath\n" in text


@pytest_twisted.inlineCallbacks
def test_help_uses_host_header_and_forwarded_proto(server, procs):
    proc = procs.spawn(
        curl(
            "-H", "Host: pipe.example.org:8443",
            "-H", "X-Forwarded-Proto: https",
            server.url("/help"),
        )
    )
    yield proc.wait()
    assert proc.exit_code == 0, proc.describe()
    assert "curl https://pipe.example.org:8443/mypath\n" in proc.text
    assert "| curl -T - https://pipe.example.org:8443/mypath\n" in proc.text
    assert "http://" not in proc.text
    assert server.host not in proc.text


@pytest_twisted.inlineCallbacks
def test_version(server):
    reply = yield http("GET", server.url("/version"))
    assert reply.code == 200
    assert reply.body == (pipeserver.__version__ + "\n").encode()


@pytest_twisted.inlineCallbacks
def test_favicon(server):
    reply = yield http("GET", server.url("/favicon.ico"))
    assert reply.code == 204
    assert reply.body == b""
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_robots(server):
    reply = yield http("GET", server.url("/robots.txt"))
    assert reply.code == 404
    assert not server.registry.pipes


@pytest.mark.parametrize("path", ["/", "/help", "/version", "/noscript"])
@pytest_twisted.inlineCallbacks
def test_head_on_reserved_paths(server, path):
    got = yield http("GET", server.url(path))
    head = yield http("HEAD", server.url(path))
    assert head.code == got.code == 200
    assert head.body == b""
    assert head.headers.get("content-type") == got.headers.get("content-type")


#: piping-server's preflight answer, header for header (its test suite
#: checks each), then what every response of ours carries.
PREFLIGHT = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, Content-Disposition, X-Piping"),
    ("Access-Control-Expose-Headers", "Access-Control-Allow-Headers"),
    ("Access-Control-Max-Age", "86400"),
    ("Content-Length", "0"),
]


@pytest.mark.parametrize("path", ["/mypath", "/", "/help"])
@pytest_twisted.inlineCallbacks
def test_options(server, procs, path):
    status, headers, body = yield wire(
        procs,
        "OPTIONS",
        server.url(path),
        "-H", "Origin: https://a.example",
        "-H", "Access-Control-Request-Method: PUT",
    )
    assert status == "HTTP/1.1 200 OK"
    assert without_date(headers) == [*PREFLIGHT, *SAFE, *SERVER]
    assert body == b""
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_options_asks_for_authorization_only_when_tokens_are_configured(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"p {'0' * 64}\n")
    server = make_server("--tokens", str(tokens))
    reply = yield http("OPTIONS", server.url("/mypath"))
    assert reply.code == 200
    assert reply.one("Access-Control-Allow-Headers") == (
        "Content-Type, Content-Disposition, X-Piping, Authorization"
    )


@pytest_twisted.inlineCallbacks
def test_options_private_network(server, procs):
    proc = procs.spawn(
        curl(
            "-X", "OPTIONS", "-D", "-",
            "-H", "Origin: https://a.example",
            "-H", "Access-Control-Request-Method: PUT",
            "-H", "Access-Control-Request-Private-Network: true",
            server.url("/mypath"),
        )
    )
    yield proc.wait()
    assert proc.exit_code == 0, proc.describe()
    status, headers, body = split_response(bytes(proc.out))
    assert status == "HTTP/1.1 200 OK"
    assert without_date(headers) == [
        *PREFLIGHT[:5],
        ("Access-Control-Allow-Private-Network", "true"),
        *PREFLIGHT[5:],
        *SAFE,
        *SERVER,
    ]
    assert body == b""
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_head_on_pipe_path_answers_at_once(server, procs):
    """HEAD takes no place in a pipe: it is answered without a sender."""
    reply = yield http("HEAD", server.url("/waiting-nobody"), timeout=5)
    assert reply.code == 200
    assert reply.body == b""
    assert reply.one("Access-Control-Allow-Origin") == "*"
    assert not server.registry.pipes
    # Also with curl -I, and while a receiver of that path is waiting.
    waiting = procs.spawn(curl(server.url("/p")), name="receiver")
    yield server.wait_receivers("/p", 1)
    head = procs.spawn(curl("-I", server.url("/p")), name="head")
    yield head.wait(timeout=5)
    assert head.exit_code == 0, head.describe()
    assert head.text.startswith("HTTP/1.1 200 OK\r\n")
    assert len(server.pipe("/p").receivers) == 1
    waiting.kill()
    yield waiting.wait()
    yield server.wait_empty()


RESERVED = ["/", "/noscript", "/help", "/version", "/favicon.ico", "/robots.txt"]


@pytest.fixture
def log_lines():
    """Everything logged while the test runs, as text."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(event) for event in events]
    globalLogPublisher.removeObserver(events.append)


@pytest.mark.parametrize("path", RESERVED)
@pytest_twisted.inlineCallbacks
def test_head_has_exactly_the_headers_of_get(server, procs, path, log_lines):
    """piping-server's "HEAD response with the same headers as GET" test,
    Content-Length included; and Twisted logs no warning about a body."""
    got_status, got, body = yield wire(procs, "GET", server.url(path))
    head_status, head, head_body = yield wire(procs, "HEAD", server.url(path))
    assert head_status == got_status
    assert without_date(head) == without_date(got)
    assert head_body == b""
    if got_status.startswith("HTTP/1.1 204"):
        # RFC 9110 8.6: a 204 has no Content-Length.
        assert header_values(got, "Content-Length") == []
        assert body == b""
    else:
        assert header_values(got, "Content-Length") == [str(len(body))]
    assert not [line for line in log_lines() if "I think I'll eat it" in line]


@pytest.mark.parametrize(
    "path, status, headers",
    [
        ("/help", "200 OK", [("Content-Type", "text/plain")]),
        ("/version", "200 OK", [("Content-Type", "text/plain")]),
        ("/robots.txt", "404 Not Found", [("Content-Type", "text/plain")]),
        ("/favicon.ico", "204 No Content", []),
    ],
)
@pytest_twisted.inlineCallbacks
def test_text_pages_headers(server, procs, path, status, headers):
    """text/plain without a charset, as piping-server sends them; no sniffing,
    a sandbox, and no framing by other sites."""
    got_status, got, body = yield wire(procs, "GET", server.url(path))
    assert got_status == "HTTP/1.1 " + status
    cors = [("Access-Control-Allow-Origin", "*")] if headers else []
    csp = [("Content-Security-Policy", PAGE_CSP)]
    length = [("Content-Length", str(len(body)))] if status != "204 No Content" else []
    assert without_date(got) == [
        *headers, *cors, *csp, *length, ("X-Content-Type-Options", "nosniff"), *SERVER
    ]


@pytest.mark.parametrize("path", ["/", "/noscript"])
@pytest_twisted.inlineCallbacks
def test_html_pages_are_not_framed_nor_sniffed(server, procs, path):
    _, headers, _ = yield wire(procs, "GET", server.url(path))
    assert header_values(headers, "X-Content-Type-Options") == ["nosniff"]
    assert header_values(headers, "Server") == ["pipeserver"]
    [csp] = header_values(headers, "Content-Security-Policy")
    directives = [d.strip() for d in csp.split(";")]
    assert "frame-ancestors 'none'" in directives
    assert "default-src 'none'" in directives
    assert "base-uri 'none'" in directives


@pytest.mark.parametrize("path", RESERVED)
@pytest_twisted.inlineCallbacks
def test_http10_content_length_is_the_pages_string_length(server, path):
    """piping-server's HTTP/1.0 test compares Content-Length with the length
    of the body as a JavaScript string: every page must be pure ASCII."""
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    class Collect(protocol.Protocol):
        def __init__(self):
            self.data = b""
            self.done = defer.Deferred()

        def dataReceived(self, data):
            self.data += data

        def connectionLost(self, reason):
            self.done.callback(self.data)

    client = Collect()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.portnum), client)
    client.transport.write(f"GET {path} HTTP/1.0\r\nHost: {server.host}\r\n\r\n".encode())
    raw = yield with_timeout(client.done, 5, "the HTTP/1.0 response")
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.0 ")
    body.decode("ascii")
    if status.startswith("HTTP/1.0 204"):
        assert header_values(headers, "Content-Length") == []
    else:
        assert header_values(headers, "Content-Length") == [str(len(body.decode("ascii")))]


@pytest.mark.parametrize(
    "query",
    [
        "%5Cexample.invalid%2Fx",  # \example.invalid/x
        "%2F%5Cexample.invalid%2Fx",  # /\example.invalid/x
        "%2F%09%2Fexample.invalid%2Fx",  # /<TAB>/example.invalid/x
        "%09%2F%2Fexample.invalid",  # <TAB>//example.invalid
        "%2F%0A%2Fexample.invalid",  # /<LF>/example.invalid
        "%2F%2F%E2%80%AEexample.invalid",  # //<RLO>example.invalid
        "my%20path",
        "%2F%00x",
    ],
)
@pytest_twisted.inlineCallbacks
def test_noscript_refuses_a_path_a_browser_would_take_off_site(server, query):
    reply = yield http("GET", server.url("/noscript?path=" + query))
    assert reply.code == 400
    assert reply.one("Content-Type") == "text/plain"
    assert reply.one("Access-Control-Allow-Origin") == "*"
    assert reply.body == b'[ERROR] Invalid query parameter "path": give a path such as /mypath\n'


@pytest.mark.parametrize(
    "query, path",
    [
        ("", "/mypath"),
        ("?path=form", "/form"),
        ("?path=%2F%2Fexample.invalid%2Fx", "/example.invalid/x"),
        ("?path=%2F%2F%2Fa", "/a"),
        ("?path=%2Fa%2F..%2Fb%3Fn%3D2", "/a/../b?n=2"),
        ("?path=%2F%C3%A9t%C3%A9", "/\u00e9t\u00e9"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_noscript_form_and_link_stay_on_this_server(server, query, path):
    import html

    reply = yield http("GET", server.url("/noscript" + query))
    assert reply.code == 200
    page = reply.body.decode("utf-8")
    action = html.escape(path, quote=True)
    assert f'<form method="POST" action="{action}" enctype="multipart/form-data">' in page
    assert f'or open <a href="{action}">' in page
    assert f'<input name="path" value="{action}">' in page


# ---------------------------------------------------------------- /help recipes, run


def _recipe(text: str, after: str) -> str:
    """The first command line of /help after the line ``after``."""
    lines = text.splitlines()
    return next(line for line in lines[lines.index(after) + 1:] if line and not line.startswith("#"))


@pytest_twisted.inlineCallbacks
def _run_pair(server, procs, tmp_path, path, get, send, env=""):
    """The receive recipe, then the send recipe, each through sh in
    ``tmp_path`` as a user would paste them; returns both processes."""
    get = get.replace("/mypath", path)
    send = send.replace("/mypath", path)
    receiver = procs.spawn(["sh", "-c", f"cd {tmp_path} && {env}{get}"], name="get recipe")
    yield server.wait_receivers(path, 1)
    sender = procs.spawn(["sh", "-c", f"cd {tmp_path} && {env}{send}"], name="send recipe")
    yield sender.wait()
    yield receiver.wait()
    return receiver, sender


@pytest_twisted.inlineCallbacks
def test_help_recipes_work_on_a_token_server(make_server, procs, tmp_path):
    import hashlib

    token = "help-recipes-token-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alpha {hashlib.sha256(token.encode()).hexdigest()}\n")
    server = make_server("--tokens", str(tokens))
    reply = yield http("GET", server.url("/help"))
    text = reply.body.decode()
    assert "    TOKEN=your-token\n" in text
    env = f"TOKEN={token}; "

    get = _recipe(text, "======= Get  =======")
    send = _recipe(text, "# Send asdf")
    assert get == f'curl -H "Authorization: Bearer $TOKEN" http://{server.host}/mypath'
    receiver, sender = yield _run_pair(server, procs, tmp_path, "/plain", get, send, env)
    assert (receiver.exit_code, sender.exit_code) == (0, 0), (receiver.describe(), sender.describe())
    assert bytes(receiver.out) == b"asdf\n"
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."

    # Encryption: openssl asks for the password on a terminal; the test
    # gives it on the command line instead, and nothing else changes.
    (tmp_path / "myfile").write_bytes(bytes(range(256)) * 100)
    password = "openssl aes-256-cbc -pbkdf2 -pass pass:s3cret"
    send = _recipe(text, "## Send").replace("openssl aes-256-cbc -pbkdf2", password)
    get = _recipe(text, "## Get").replace("openssl aes-256-cbc -pbkdf2", password)
    receiver, sender = yield _run_pair(server, procs, tmp_path, "/secret", get, send, env)
    assert (receiver.exit_code, sender.exit_code) == (0, 0), (receiver.describe(), sender.describe())
    assert bytes(receiver.out) == bytes(range(256)) * 100
    # No "deprecated key derivation used" from openssl, on either side
    # (curl's progress meter is all that is on stderr).
    for proc in (receiver, sender):
        assert b"WARNING" not in bytes(proc.err) and b"deprecated" not in bytes(proc.err), (
            proc.describe())
