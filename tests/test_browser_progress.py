# mypy: disable-error-code="func-returns-value,arg-type"
"""``/PATH?progress`` in Debian's headless Chromium (issue 21, item 3).

A browser asks for HTML, so it gets the spectator's page, whose script
reads the same events (with ``fetch``, so it can pass a token) and draws
them: a transfer sent with curl is shown waiting, streaming (with its
byte count) and done. The page's script is inline, admitted by its hash
(our CSP): a CSP violation or a script error fails the test. Skipped,
loudly, where Chromium or Playwright is missing (see tests/test_browser.py).
"""

from __future__ import annotations

import hashlib

import pytest_twisted
from twisted.internet import reactor, threads

import helpers
import test_browser
from helpers import curl
from test_browser import browse

pytestmark = getattr(test_browser, "pytestmark", [])

SIZE = 1024 * 1024


def split_body(tmp_path):
    data = bytes(range(256)) * (SIZE // 256)
    (tmp_path / "first").write_bytes(data[: SIZE // 2])
    (tmp_path / "rest").write_bytes(data[SIZE // 2:])
    return hashlib.sha256(data).hexdigest(), str(tmp_path / "gate")


def watch(page, gate):
    """Follow the page through a transfer paused halfway at ``gate``."""
    page.wait_for_function("() => document.body.dataset.state === 'streaming'"
                           " && document.getElementById('detail').textContent"
                           ".startsWith('524,288 bytes')", timeout=15000)
    halfway = page.inner_text("#state"), page.inner_text("#detail")
    helpers.open_gate(gate)
    page.wait_for_function("() => document.body.dataset.state === 'done'", timeout=15000)
    return halfway, page.inner_text("#state"), page.inner_text("#detail")


def open_page(browser, url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(url)
    return page, errors


@pytest_twisted.inlineCallbacks
def test_the_page_shows_a_transfer_sent_with_curl(make_server, procs, tmp_path):
    server = make_server()
    digest, gate = split_body(tmp_path)
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-f", "-o", out, server.url("/shown")))
    yield server.wait_receivers("/shown", 1)

    started = []

    def start_sender():
        started.extend(procs.pipeline(
            helpers.gated(str(tmp_path / "first"), gate, str(tmp_path / "rest")),
            curl("-f", "-T", "-", server.url("/shown")),
        ))

    def script(browser):
        page, errors = open_page(browser, server.url("/shown?progress"))
        page.wait_for_function("() => document.body.dataset.state === 'waiting'",
                               timeout=15000)
        waiting = page.inner_text("#state")
        threads.blockingCallFromThread(reactor, start_sender)
        return waiting, watch(page, gate), errors

    waiting, (halfway, state, detail), errors = yield browse(script)
    sender = started[1]
    yield sender.wait()
    yield receiver.wait()
    assert errors == []
    assert waiting == "Waiting: no sender yet, 1 of 1 receiver(s)."
    assert halfway[0] == "Streaming."
    assert state == "Done."
    assert detail.startswith("1,048,576 bytes") and detail.endswith("1 of 1 receiver(s).")
    assert helpers.file_sha256(out) == digest
    # The page is a spectator: the pipe had one receiver, curl.
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."


@pytest_twisted.inlineCallbacks
def test_the_page_asks_for_a_token(make_server, procs, tmp_path):
    token = "progress-page-token-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"pp {hashlib.sha256(token.encode()).hexdigest()}\n")
    server = make_server("--tokens", str(tokens))
    digest, gate = split_body(tmp_path)
    auth = ["-H", f"Authorization: Bearer {token}"]
    out = str(tmp_path / "out")
    receiver = procs.spawn(curl("-f", *auth, "-o", out, server.url("/tok")))
    _, sender = procs.pipeline(
        helpers.gated(str(tmp_path / "first"), gate, str(tmp_path / "rest")),
        curl("-f", *auth, "-T", "-", server.url("/tok")),
    )

    def script(browser):
        page, errors = open_page(browser, server.url("/api/v1/pipe/tok?progress"))
        page.wait_for_selector("#token-form:not([hidden])", timeout=15000)
        asked = page.inner_text("#state")
        page.fill("#token", token)
        page.click("#token-form button")
        return asked, watch(page, gate), errors

    asked, (halfway, state, detail), errors = yield browse(script)
    yield sender.wait()
    yield receiver.wait()
    # The browser logs the 401 it was answered as a console error.
    assert [e for e in errors if "401" not in e] == []
    assert asked == "This server asks for your project's token."
    assert state == "Done."
    assert helpers.file_sha256(out) == digest


@pytest_twisted.inlineCallbacks
def test_the_page_at_root_links_the_pipes_progress(make_server):
    server = make_server()

    def script(browser):
        page, errors = open_page(browser, server.url("/"))
        first = page.get_attribute("#watch", "href")
        page.fill("#path", "//elsewhere.example/backup?n=2")
        return first, page.get_attribute("#watch", "href"), errors

    first, typed, errors = yield browse(script)
    assert errors == []
    assert first == "/mypath?progress"
    # One leading slash (never a link to another host), no query of its own.
    assert typed == "/elsewhere.example/backup?progress"
