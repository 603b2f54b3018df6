# mypy: disable-error-code="arg-type,var-annotated"
"""Projects and tokens over a real port with curl (SPEC §8)."""

from __future__ import annotations

import base64
import hashlib

import pytest_twisted
from twisted.logger import globalLogPublisher, formatEvent

import helpers
from helpers import curl

TOKEN_A = "alpha-token-0123456789abcdef"
TOKEN_A2 = "alpha-second-token-fedcba987654"
TOKEN_B = "beta-token-0123456789abcdef"

UNAUTHORIZED = b"[ERROR] Missing or invalid token.\nPass your project's token: curl -H 'Authorization: Bearer TOKEN' URL (or curl -u x:TOKEN URL).\n"


def line(project: str, token: str) -> str:
    return f"{project} {hashlib.sha256(token.encode()).hexdigest()}\n"


def tokens_file(tmp_path, *lines: str) -> str:
    path = tmp_path / "tokens"
    path.write_text("# project tokens\n" + "".join(lines))
    return str(path)


def bearer(token: str) -> list[str]:
    return ["-H", f"Authorization: Bearer {token}"]


@pytest_twisted.inlineCallbacks
def test_requests_without_a_valid_token_get_401(make_server, tmp_path):
    server = make_server("--tokens", tokens_file(tmp_path, line("alpha", TOKEN_A)))
    wrong_basic = "Basic " + base64.b64encode(b"user:wrong").decode()
    for method in ("GET", "PUT", "POST"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": wrong_basic}):
            reply = yield helpers.http(
                method, server.url("/secret"), data=None if method == "GET" else b"x", headers=headers
            )
            assert reply.code == 401, (method, headers)
            assert reply.body == UNAUTHORIZED
            assert reply.one("WWW-Authenticate") == 'Bearer realm="pipe"'
            assert reply.one("Content-Type") == "text/plain"
            assert reply.one("Access-Control-Allow-Origin") == "*"
    assert not server.registry.pipes


@pytest_twisted.inlineCallbacks
def test_reserved_paths_and_options_stay_open(make_server, tmp_path):
    server = make_server("--tokens", tokens_file(tmp_path, line("alpha", TOKEN_A)))
    version = yield helpers.http("GET", server.url("/version"))
    assert version.code == 200
    options = yield helpers.http("OPTIONS", server.url("/anything"))
    assert options.code == 200
    assert options.one("Access-Control-Allow-Headers") == (
        "Content-Type, Content-Disposition, X-Piping, Authorization"
    )


@pytest_twisted.inlineCallbacks
def test_bearer_and_basic_tokens_of_one_project_meet(make_server, procs, tmp_path):
    server = make_server(
        "--tokens", tokens_file(tmp_path, line("alpha", TOKEN_A), line("alpha", TOKEN_A2))
    )
    data = tmp_path / "data"
    digest = helpers.make_file(str(data), 300_000, seed=3)
    receiver = procs.spawn(curl("-f", "-u", f"anyone:{TOKEN_A2}", server.url("/shared")))
    yield server.wait_receivers("/shared", 1)
    sender = procs.spawn(curl("-f", *bearer(TOKEN_A), "-T", str(data), server.url("/shared")))
    yield sender.wait()
    yield receiver.wait()
    assert sender.exit_code == 0, sender.describe()
    assert receiver.exit_code == 0, receiver.describe()
    assert receiver.sha256 == digest
    assert server.pipe("/shared") is None


@pytest_twisted.inlineCallbacks
def test_same_path_in_two_projects_is_two_pipes_at_once(make_server, procs, tmp_path):
    server = make_server(
        "--tokens", tokens_file(tmp_path, line("alpha", TOKEN_A), line("beta", TOKEN_B))
    )
    file_a, file_b = tmp_path / "a", tmp_path / "b"
    digest_a = helpers.make_file(str(file_a), 200_000, seed=1)
    digest_b = helpers.make_file(str(file_b), 200_000, seed=2)
    recv_a = procs.spawn(curl("-f", *bearer(TOKEN_A), server.url("/same")))
    recv_b = procs.spawn(curl("-f", *bearer(TOKEN_B), server.url("/same")))
    yield helpers.wait_for(
        lambda: {key[0] for key in server.registry.pipes} == {"alpha", "beta"},
        what="both projects waiting on /same",
    )
    # Both pipes wait at once on the same path, in their own projects.
    assert sorted(server.registry.pipes) == [("alpha", b"/same"), ("beta", b"/same")]
    send_b = procs.spawn(curl("-f", *bearer(TOKEN_B), "-T", str(file_b), server.url("/same")))
    send_a = procs.spawn(curl("-f", *bearer(TOKEN_A), "-T", str(file_a), server.url("/same")))
    for proc in (send_a, send_b, recv_a, recv_b):
        yield proc.wait()
        assert proc.exit_code == 0, proc.describe()
    assert recv_a.sha256 == digest_a
    assert recv_b.sha256 == digest_b


@pytest_twisted.inlineCallbacks
def test_access_log_names_project_but_never_the_token(make_server, procs, tmp_path):
    server = make_server("--tokens", tokens_file(tmp_path, line("alpha", TOKEN_A)))
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        receiver = procs.spawn(curl("-f", *bearer(TOKEN_A), server.url("/logged?n=1")))
        yield server.wait_receivers("/logged", 1)
        sender = procs.spawn(
            curl("-f", "-u", f"x:{TOKEN_A}", "--data-binary", "hello", server.url("/logged"))
        )
        yield sender.wait()
        yield receiver.wait()
        bad = yield helpers.http("GET", server.url("/logged"), headers={"Authorization": "Bearer " + TOKEN_B})
        assert bad.code == 401
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert receiver.out == b"hello"
    texts = [formatEvent(e) for e in events]
    access = [t for e, t in zip(events, texts) if e.get("log_namespace") == "pipeserver.access"]
    assert any(t.startswith("GET /logged 200 ") and t.endswith("project=alpha") for t in access), access
    assert any(t.startswith("POST /logged 200 ok in=5 ") for t in access), access
    assert any(t.startswith("GET /logged 401 refused ") and t.endswith("project=-") for t in access), access
    everything = "\n".join(texts) + repr(events)
    for secret in (TOKEN_A, TOKEN_B, "hello"):
        assert secret not in everything


@pytest_twisted.inlineCallbacks
def test_reload_with_a_bad_line_still_revokes_a_removed_token(make_server, tmp_path):
    path = tokens_file(
        tmp_path, line("alpha", TOKEN_A), line("alpha", TOKEN_A2), line("beta", TOKEN_B)
    )
    server = make_server("--tokens", path)

    @pytest_twisted.inlineCallbacks
    def statuses():
        codes = []
        for token in (TOKEN_A, TOKEN_A2, TOKEN_B):
            reply = yield helpers.http(
                "HEAD", server.url("/probe"), headers={"Authorization": "Bearer " + token}
            )
            codes.append(reply.code)
        return codes

    assert (yield statuses()) == [200, 200, 200]
    # One edit removes TOKEN_A and leaves a malformed line (a token in clear).
    with open(path, "w") as handle:
        handle.write(
            "# project tokens\n" + line("alpha", TOKEN_A2) + f"beta {TOKEN_B}\n"
            + line("beta", TOKEN_B)
        )
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        server.site.tokens.reload()  # what SIGHUP (or the poll) does
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (yield statuses()) == [401, 200, 200]
    texts = [formatEvent(e) for e in events]
    assert (
        f"Tokens file {path}: line 3: expected 'PROJECT SHA256_HEX', got 32 characters; skipped"
        in texts
    )
    assert TOKEN_B not in "\n".join(texts) + repr(events)
