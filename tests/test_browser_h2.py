# mypy: disable-error-code="arg-type,attr-defined,func-returns-value"
"""The browser page over HTTP/2 (issue 12, item 6), in Debian's headless Chromium.

Chromium sends a ``fetch()`` whose body is a ``ReadableStream`` (``duplex:
'half'``) only over HTTP/2 or later, so these run on an ``ssl:`` listener (ALPN
``h2``) with a self-signed certificate. Over HTTP/1.1 the page must send as it
always did (tests/test_browser.py); the last tests here check that it does not
try to stream there. Skipped exactly as tests/test_browser.py is.
"""

from __future__ import annotations

import hashlib

import pytest_twisted
from twisted.internet import reactor, threads

import helpers
import test_browser
from helpers import curl
from test_browser import CHROMIUM, FLAGS
from test_endpoints import run_service, self_signed, services  # noqa: F401 (a fixture)

pytestmark = getattr(test_browser, "pytestmark", [])

SUCCESS = "[INFO] All receiver(s) was/were received successfully."

#: What a page script streams: a pseudo-random pattern of a prime length
#: (xorshift32 from SEED, one byte a step), repeated to TOTAL bytes, sent in
#: chunks of CHUNK bytes, so that a lost, repeated or reordered chunk shows.
PERIOD = 1_000_003
SEED = 2463534242
TOTAL = 32 * 1024 * 1024
CHUNK = 65_537


def pattern() -> bytes:
    out = bytearray(PERIOD)
    x = SEED
    for i in range(PERIOD):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


def expected_stream() -> bytes:
    return (pattern() * (TOTAL // PERIOD + 1))[:TOTAL]


#: Run in the page: a second fetch of PATH receives while a fetch with a
#: ReadableStream body sends. Returns what each saw, never throws.
STREAM_SCRIPT = """
async ([path, PERIOD, SEED, TOTAL, CHUNK]) => {
  const P = new Uint8Array(PERIOD);
  let x = SEED;
  for (let i = 0; i < PERIOD; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    P[i] = x & 0xff;
  }
  let offset = 0;
  const body = new ReadableStream({
    pull(controller) {
      if (offset >= TOTAL) { controller.close(); return; }
      const n = Math.min(CHUNK, TOTAL - offset);
      const chunk = new Uint8Array(n);
      for (let i = 0; i < n;) {
        const p = (offset + i) % PERIOD;
        const take = Math.min(n - i, PERIOD - p);
        chunk.set(P.subarray(p, p + take), i);
        i += take;
      }
      offset += n;
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 120000);
  const receive = (async () => {
    const response = await fetch(path, { cache: "no-store", signal: abort.signal });
    const got = new Uint8Array(TOTAL);
    let length = 0;
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (length + value.length <= TOTAL) got.set(value, length);
      length += value.length;
    }
    const digest = await crypto.subtle.digest("SHA-256", got.subarray(0, Math.min(length, TOTAL)));
    const hex = Array.from(new Uint8Array(digest)).map((b) => b.toString(16).padStart(2, "0")).join("");
    return { status: response.status, length: length, sha256: hex };
  })().catch((error) => ({ error: String(error) }));
  const send = (async () => {
    const response = await fetch(path, {
      method: "PUT", body: body, duplex: "half", signal: abort.signal,
      headers: { "Content-Type": "application/octet-stream" },
    });
    return { status: response.status, text: await response.text(), pulled: offset };
  })().catch((error) => {
    abort.abort();
    return { error: String(error), pulled: offset };
  });
  const [sent, received] = await Promise.all([send, receive]);
  clearTimeout(timer);
  const navigation = performance.getEntriesByType("navigation")[0];
  return { sent: sent, received: received, protocol: navigation.nextHopProtocol };
}
"""


def browse(script, *flags: str):
    """``script(context)`` in a thread, with a browser context that takes the
    self-signed certificate."""

    def run():
        with test_browser.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=[*FLAGS, *flags]
            )
            try:
                context = browser.new_context(ignore_https_errors=True)
                return script(context)
            finally:
                browser.close()

    return threads.deferToThread(run)


def open_page(context, url: str, path: str):
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(url)
    page.fill("#path", path)
    page.errors = errors
    return page


def on_reactor(f):
    """``f()`` run on the reactor's thread, from the browser's thread."""
    return threads.blockingCallFromThread(reactor, f)


def wait_from_thread(page, predicate, timeout_ms: int, what: str):
    """Poll ``predicate()`` (run on the reactor) from the browser's thread."""
    for _ in range(timeout_ms // 50):
        if on_reactor(predicate):
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out after {timeout_ms} ms waiting for {what}")


@pytest_twisted.inlineCallbacks
def tls_server(services, tmp_path):
    """Our service on an ``ssl:`` listener; returns (base URL, certificate, Server)."""
    key, cert = self_signed(str(tmp_path))
    svc, (port,) = yield run_service(
        services, "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    server = helpers.Server(svc.site, port)
    return f"https://127.0.0.1:{port.getHost().port}", cert, server


@pytest_twisted.inlineCallbacks
def test_a_page_streams_32_mib_to_a_second_fetch(services, tmp_path):
    base, _, server = yield tls_server(services, tmp_path)

    def script(context):
        page = open_page(context, base + "/", "/unused")
        return page.evaluate(STREAM_SCRIPT, ["/stream32", PERIOD, SEED, TOTAL, CHUNK]), page.errors

    result, errors = yield browse(script)
    expected = hashlib.sha256(expected_stream()).hexdigest()
    assert result["protocol"] == "h2", result
    assert "error" not in result["sent"], result
    assert "error" not in result["received"], result
    assert result["received"] == {"status": 200, "length": TOTAL, "sha256": expected}, result
    assert result["sent"]["status"] == 200, result
    assert result["sent"]["text"].splitlines()[-1] == SUCCESS, result
    assert errors == []
    assert server.registry.pipes == {}


@pytest_twisted.inlineCallbacks
def test_text_mode_streams_as_the_user_types(services, procs, tmp_path):
    base, cert, server = yield tls_server(services, tmp_path)
    receiver = procs.spawn(curl("-f", "--http2", "--cacert", cert, base + "/typed"))
    yield server.wait_receivers("/typed", 1)
    first = "Hello, h\u00e9llo "
    rest = ["from a page\n", "typed \u2713 in ", "pieces."]

    def script(context):
        page = open_page(context, base + "/", "/typed")
        shown = page.is_visible("#stream-mode")
        page.check("input[value=text]")
        page.click("#text")
        page.keyboard.type(first, delay=10)
        # The receiver has the first part while the user is still typing.
        wait_from_thread(
            page, lambda: bytes(receiver.out) == first.encode(), 10000, "the first part"
        )
        early = bytes(receiver.out)
        label = page.inner_text("#send")
        # Text already sent cannot be taken back: the edit is undone.
        page.keyboard.press("Backspace")
        kept = page.input_value("#text")
        for piece in rest:
            page.wait_for_timeout(200)
            page.keyboard.type(piece, delay=10)
        page.click("#send")
        page.wait_for_selector("#send-status[data-done]", timeout=30000)
        # Typing on after the end opens no new stream (Send would send it all).
        status = page.inner_text("#send-status")
        page.keyboard.type("!", delay=10)
        page.wait_for_timeout(300)
        return {
            "shown": shown,
            "early": early,
            "label": label,
            "kept": kept,
            "status": status,
            "after": page.inner_text("#send-status"),
            "done": page.get_attribute("#send-status", "data-done"),
            "button": page.inner_text("#send"),
            "errors": page.errors,
        }

    result = yield browse(script)
    yield receiver.wait()
    typed = (first + "".join(rest)).encode("utf-8")
    assert result["shown"] is True
    assert result["early"] == first.encode("utf-8")
    assert result["label"] == "End"
    assert result["kept"] == first
    assert receiver.exit_code == 0, receiver.describe()
    assert bytes(receiver.out) == typed
    assert result["done"] == "ok", result
    assert result["status"].splitlines()[-1] == SUCCESS, result
    assert result["button"] == "Send"
    assert result["after"] == result["status"]
    assert result["errors"] == []


@pytest_twisted.inlineCallbacks
def test_a_file_streams_with_progress_as_bytes_leave(services, procs, tmp_path):
    base, cert, server = yield tls_server(services, tmp_path)
    size = 12 * 1024 * 1024 + 5
    data = tmp_path / "movie.bin"
    digest = helpers.make_file(str(data), size, seed=21)
    headers = tmp_path / "headers"

    def script(context):
        page = open_page(context, base + "/", "/file-stream")
        page.set_input_files("#file", str(data))
        page.click("#send")
        # No receiver yet: the upload stops where the flow-control windows
        # and buffers end, and the progress shows where.
        # (Polled from here: the page's CSP refuses wait_for_function's eval.)
        stalled = 0
        for _ in range(100):
            page.wait_for_timeout(500)
            value = page.eval_on_selector("#send-progress", "p => p.value")
            if value and value == stalled:
                break
            stalled = value
        on_reactor(
            lambda: procs.spawn(
                curl("-f", "--http2", "--cacert", cert, "-D", str(headers),
                     base + "/file-stream"),
                name="receiver", keep=False,
            )
        )
        page.wait_for_selector("#send-status[data-done]", timeout=60000)
        return {
            "stalled": stalled,
            "progress": page.eval_on_selector("#send-progress", "p => [p.value, p.max]"),
            "status": page.inner_text("#send-status"),
            "done": page.get_attribute("#send-status", "data-done"),
            "errors": page.errors,
        }

    result = yield browse(script)
    [receiver] = [p for p in procs.all if p.name == "receiver"]
    yield receiver.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert receiver.sha256 == digest
    assert receiver.nbytes == size
    assert "filename*=UTF-8''movie.bin" in headers.read_text()
    assert 0 < result["stalled"] < size, result
    assert result["progress"] == [size, size], result
    assert result["done"] == "ok", result
    assert result["status"].splitlines()[-1] == SUCCESS, result
    assert result["errors"] == []


@pytest_twisted.inlineCallbacks
def test_over_http_1_1_the_page_does_not_stream(make_server, services, procs, tmp_path):
    """Plain HTTP, and TLS with HTTP/2 turned off in Chromium: no stream
    indicator, and typing sends nothing until Send (today's behaviour)."""
    plain = make_server()
    base, cert, tls = yield tls_server(services, tmp_path)
    sent = {}

    def script(context, url, server):
        page = open_page(context, url + "/", "/h1")
        page.check("input[value=text]")
        page.click("#text")
        page.keyboard.type("not yet", delay=10)
        page.wait_for_timeout(300)
        sent["typing"] = on_reactor(lambda: server.pipe("/h1") is not None)
        return {
            "shown": page.is_visible("#stream-mode"),
            "protocol": page.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            ),
            "label": page.inner_text("#send"),
            "errors": page.errors,
        }

    result = yield browse(lambda c: script(c, plain.url(""), plain))
    assert result == {"shown": False, "protocol": "http/1.1", "label": "Send", "errors": []}
    assert sent["typing"] is False
    result = yield browse(lambda c: script(c, base, tls), "--disable-http2")
    assert result == {"shown": False, "protocol": "http/1.1", "label": "Send", "errors": []}
    assert sent["typing"] is False
