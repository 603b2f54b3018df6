"""The page at ``/`` on service paths (SPEC §12): it receives a message of
a ``?queue`` path, and joins a running ``?live`` stream. Chromium."""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted

from helpers import curl, wait_for
from test_browser import CHROMIUM, browse, open_page

try:
    import playwright.sync_api  # noqa: F401
except ImportError:  # pragma: no cover - depends on the machine
    CHROMIUM = None
if CHROMIUM is None:
    pytestmark = pytest.mark.skip(reason="BROWSER TESTS SKIPPED: no chromium or playwright")


@pytest_twisted.inlineCallbacks
def test_the_page_receives_from_a_queue_and_joins_a_live_stream(make_server, procs, tmp_path):
    server = make_server()
    message = b"one job for whoever is first\n"
    (tmp_path / "job").write_bytes(message)

    def queue(browser):
        page = open_page(browser, server.url("/"), "/jobs")
        page.select_option("#kind", "queue")
        page.click("#receive")
        page.wait_for_selector("#recv-status[data-done]", timeout=30000)
        return page.inner_text("#recv-sha256"), page.errors

    received = browse(queue)
    yield wait_for(lambda: ("", b"/jobs") in server.registry.queues, 20, what="the page")
    sender = procs.spawn(curl("-fsS", "-T", str(tmp_path / "job"), server.url("/jobs?queue")))
    sha, errors = yield received
    yield sender.wait()
    assert sender.exit_code == 0 and sha == hashlib.sha256(message).hexdigest() and errors == []

    # A live stream that runs before the page joins it: the page's bytes
    # start at a line, after what was already passed on.
    first = procs.spawn(curl("-fsS", server.url("/log?live")))
    yield server.wait_receivers("/log", 1)
    producer, live = procs.pipeline(
        ["sh", "-c", "i=0; while [ $i -lt 60 ]; do echo line $i; i=$((i+1)); sleep 0.1; done"],
        curl("-fsS", "-H", "Content-Type: text/plain", "-T", "-", server.url("/log?live=line")),
    )
    yield wait_for(lambda: b"line 3\n" in first.out, 10, what="the stream")

    def live_(browser):
        page = open_page(browser, server.url("/"), "/log")
        page.select_option("#kind", "live")
        page.click("#receive")
        page.wait_for_selector("#recv-status[data-done]", timeout=30000)
        return page.inner_text("#recv-text"), page.errors

    shown, errors = yield browse(live_)
    yield live.wait(timeout=30)
    assert live.exit_code == 0, live.describe()
    got = shown.strip().splitlines()
    assert errors == [] and got and got[-1] == "line 59"
    start = int(got[0].split()[1])
    assert start > 3 and got == [f"line {i}" for i in range(start, 60)]
    assert live.lines()[-1] == "[INFO] 2 receiver(s) got the end of the stream."
    yield first.wait()
