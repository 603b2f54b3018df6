"""Reserved paths, CORS preflight and HEAD over a real socket (SPEC §7)."""

from __future__ import annotations

import pytest
import pytest_twisted

import pipeserver
from helpers import curl, http, split_response, header_values


@pytest_twisted.inlineCallbacks
def test_index(server):
    reply = yield http("GET", server.url("/"))
    assert reply.code == 200
    assert b"<html" in reply.body.lower()
    assert b"/mypath" in reply.body
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_noscript(server):
    reply = yield http("GET", server.url("/noscript"))
    assert reply.code == 200
    body = reply.body.lower()
    assert b"<form" in body and b"multipart/form-data" in body
    assert b"<script" not in body
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


PREFLIGHT = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, Content-Disposition, X-Piping, Authorization"),
    ("Access-Control-Max-Age", "86400"),
]


@pytest.mark.parametrize("path", ["/mypath", "/", "/help"])
@pytest_twisted.inlineCallbacks
def test_options(server, path):
    reply = yield http(
        "OPTIONS",
        server.url(path),
        headers={"Origin": "https://a.example", "Access-Control-Request-Method": "PUT"},
    )
    assert reply.code == 200
    for name, value in PREFLIGHT:
        assert reply.headers.get(name.lower()) == [value], name
    assert "access-control-allow-private-network" not in reply.headers
    assert not server.registry.pipes


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
    for name, value in PREFLIGHT:
        assert header_values(headers, name) == [value], name
    assert header_values(headers, "Access-Control-Allow-Private-Network") == ["true"]
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
