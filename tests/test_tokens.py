# mypy: disable-error-code="arg-type,var-annotated"
"""Tokens (SPEC §8) without sockets: the file format, header parsing, reloads."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from pipeserver.web import tokens
from pipeserver.errors import Rejection


def line_for(project: str, token: str) -> str:
    return f"{project} {hashlib.sha256(token.encode()).hexdigest()}\n"


class FakeRequest:
    def __init__(self, authorization: bytes | None) -> None:
        self.authorization = authorization

    def getHeader(self, name: bytes) -> bytes | None:
        assert name == b"authorization"
        return self.authorization


def test_parse_maps_hashes_to_projects_and_skips_comments():
    text = (
        "# the alpha team\n"
        + line_for("alpha", "t1")
        + "\n   \n"
        + line_for("beta", "t2").rstrip("\n")
        + "   # trailing comment\n"
    )
    table = tokens.parse(text)
    assert table == {
        hashlib.sha256(b"t1").hexdigest(): "alpha",
        hashlib.sha256(b"t2").hexdigest(): "beta",
    }


@pytest.mark.parametrize(
    "bad",
    [
        "alpha\n",
        "alpha notahash\n",
        "alpha " + "0" * 63 + "\n",
        "alpha beta " + "0" * 64 + "\n",
    ],
)
def test_parse_rejects_malformed_lines_naming_the_line(bad):
    with pytest.raises(tokens.TokenFileError, match="^line 2: "):
        tokens.parse("# ok\n" + bad)


def test_parse_rejects_one_token_in_two_projects():
    with pytest.raises(tokens.TokenFileError, match="line 2: the same token is in two projects"):
        tokens.parse(line_for("a", "t") + line_for("b", "t"))


@pytest.mark.parametrize(
    "header, token",
    [
        (b"Bearer abc", "abc"),
        (b"bearer   abc  ", "abc"),
        (b"Basic " + base64.b64encode(b"user:secret"), "secret"),
        (b"Basic " + base64.b64encode(b":pw:with:colons"), "pw:with:colons"),
        (b"Basic " + base64.b64encode(b"useronly"), None),
        (b"Basic !!notbase64", None),
        (b"Digest abc", None),
        (b"Bearer", None),
        (None, None),
        (b"", None),
    ],
)
def test_token_from_authorization_header(header, token):
    assert tokens.token_from(header) == token


def test_new_token_is_random_long_and_its_line_parses():
    token, line = tokens.new_token("alpha")
    other, _ = tokens.new_token("alpha")
    assert token != other
    # 32 random bytes, url-safe base64: at least 128 bits with margin.
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert tokens.parse(line) == {hashlib.sha256(token.encode()).hexdigest(): "alpha"}


@pytest.mark.parametrize("project", ["", "two words", "a#b"])
def test_new_token_refuses_bad_project_names(project):
    with pytest.raises(ValueError):
        tokens.new_token(project)


def test_main_prints_token_and_line(capsys):
    assert tokens.main(["alpha"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("token: ")
    token = out[0][len("token: ") :]
    assert out[1] == "line:  " + line_for("alpha", token).rstrip("\n")


def test_main_usage(capsys):
    assert tokens.main([]) == 2
    assert "usage: python -m pipeserver.web.tokens PROJECT" in capsys.readouterr().err


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(line_for("alpha", "tok-a"))
    return path


def test_authorizer_returns_project_or_raises_401(token_file):
    store = tokens.Tokens(str(token_file), task.Clock())
    assert store(FakeRequest(b"Bearer tok-a")) == "alpha"
    for header in (None, b"Bearer nope", b"Basic " + base64.b64encode(b"x:nope")):
        with pytest.raises(Rejection) as caught:
            store(FakeRequest(header))
        assert caught.value.status == 401
        assert caught.value.body == b"[ERROR] Missing or invalid token.\nPass your project's token: curl -H 'Authorization: Bearer TOKEN' URL (or curl -u x:TOKEN URL).\n"
        assert caught.value.headers == (("WWW-Authenticate", 'Bearer realm="pipe"'),)


def test_changed_file_is_picked_up_by_the_poll(token_file):
    clock = task.Clock()
    store = tokens.Tokens(str(token_file), clock, poll=2.0)
    store.start()
    token_file.write_text(line_for("alpha", "tok-a") + line_for("beta", "tok-b"))
    # Make sure the stamp differs even on a coarse-mtime filesystem.
    os.utime(token_file, (1, 1))
    assert store.project_of("tok-b") is None
    clock.advance(2.0)
    assert store.project_of("tok-b") == "beta"
    assert store.projects == ["alpha", "beta"]
    store.stop()
    assert not clock.getDelayedCalls()


def reload_logged(store):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        result = store.reload()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return result, [e for e in events if e.get("log_level") == LogLevel.error]


def test_reload_applies_valid_lines_and_skips_bad_ones_by_number(token_file):
    token_file.write_text(line_for("alpha", "tok-a") + line_for("beta", "tok-b"))
    store = tokens.Tokens(str(token_file), task.Clock())
    # One edit: tok-a revoked, gamma added, and a typo that holds a token in clear.
    token_file.write_text(
        "# edited\n" + line_for("beta", "tok-b") + "gamma tok-g-in-clear\n"
        + line_for("gamma", "tok-g")
    )
    result, errors = reload_logged(store)
    assert result is False
    assert store.project_of("tok-a") is None
    assert store.project_of("tok-b") == "beta"
    assert store.project_of("tok-g") == "gamma"
    assert [formatEvent(e) for e in errors] == [
        f"Tokens file {token_file}: line 3: expected 'PROJECT SHA256_HEX', "
        "got 20 characters; skipped"
    ]
    assert "tok-g" not in repr(errors)


def test_reload_of_only_bad_lines_leaves_no_token(token_file):
    store = tokens.Tokens(str(token_file), task.Clock())
    token_file.write_text("alpha tok-a-in-clear\n")
    result, errors = reload_logged(store)
    assert result is False
    assert store.project_of("tok-a") is None
    assert len(errors) == 1
    assert errors[0]["why"] == "line 1: expected 'PROJECT SHA256_HEX', got 20 characters"
    assert "tok-a" not in repr(errors[0])


def test_reload_drops_a_token_named_in_two_projects(token_file):
    store = tokens.Tokens(str(token_file), task.Clock())
    token_file.write_text(
        line_for("alpha", "tok-a") + line_for("beta", "tok-a") + line_for("beta", "tok-b")
    )
    result, errors = reload_logged(store)
    assert result is False
    assert store.project_of("tok-a") is None
    assert store.project_of("tok-b") == "beta"
    assert [e["why"] for e in errors] == ["line 2: the same token is in two projects"]


def test_reload_skips_a_line_that_is_not_utf8(token_file):
    store = tokens.Tokens(str(token_file), task.Clock())
    token_file.write_bytes(
        b"alph\xff " + hashlib.sha256(b"tok-a").hexdigest().encode() + b"\n"
        + line_for("beta", "tok-b").encode()
    )
    result, errors = reload_logged(store)
    assert store.project_of("tok-a") is None
    assert store.project_of("tok-b") == "beta"
    assert [e["why"] for e in errors] == ["line 1: not UTF-8"]


def test_missing_file_on_reload_keeps_the_old_tokens(token_file):
    store = tokens.Tokens(str(token_file), task.Clock())
    token_file.unlink()
    assert store.reload() is False
    assert store.project_of("tok-a") == "alpha"
