# mypy: disable-error-code="assignment,func-returns-value"
"""The browser page in a real headless Chromium (Debian's), driven by Playwright.

One tab sends a file from ``/``, another receives it there, and the bytes are
checked by their sha256 (computed in the receiving page). Skipped, loudly,
only where Chromium or Playwright is not installed; CI installs both.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings

import pytest
import pytest_twisted
from twisted.internet import threads

import helpers
from helpers import curl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if CHROMIUM is None or sync_playwright is None:
    reason = (
        "BROWSER TESTS SKIPPED: "
        + ("no chromium on PATH (apt-get install chromium)" if CHROMIUM is None else "")
        + (" no playwright (pip install playwright)" if sync_playwright is None else "")
    )
    warnings.warn(reason)
    pytestmark = pytest.mark.skip(reason=reason)

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-token-0123456789"


def browse(script, flags=()):
    """Run ``script(browser)`` in a thread: the Playwright sync API blocks,
    and the server under test lives on this thread's reactor. ``flags``:
    more Chromium flags."""

    def run():
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=FLAGS + list(flags)
            )
            try:
                return script(browser)
            finally:
                browser.close()

    return threads.deferToThread(run)


def open_page(browser, url: str, path: str, n: int = 1, token: str = ""):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(url)
    page.fill("#path", path)
    page.fill("#n", str(n))
    if token:
        page.fill("#token", token)
    page.errors = errors
    return page


@pytest_twisted.inlineCallbacks
def test_send_a_file_from_one_page_and_receive_it_in_another(make_server, tmp_path):
    server = make_server()
    data = tmp_path / "photo.bin"
    digest = helpers.make_file(str(data), 3 * 1024 * 1024 + 17, seed=11)

    def script(browser):
        receiver = open_page(browser, server.url("/"), "/browser-pipe")
        receiver.click("#receive")
        receiver.wait_for_function(
            "document.getElementById('recv-status').textContent.startsWith('Waiting')"
        )
        sender = open_page(browser, server.url("/"), "/browser-pipe")
        sender.set_input_files("#file", str(data))
        sender.click("#send")
        sender.wait_for_selector("#send-status[data-done]", timeout=30000)
        receiver.wait_for_selector("#recv-status[data-done]", timeout=30000)
        return {
            "sent": sender.inner_text("#send-status"),
            "sent_done": sender.get_attribute("#send-status", "data-done"),
            "received": receiver.inner_text("#recv-status"),
            "sha256": receiver.inner_text("#recv-sha256"),
            "download": receiver.get_attribute("#recv-link", "download"),
            "errors": sender.errors + receiver.errors,
        }

    result = yield browse(script)
    assert result["errors"] == []
    assert result["sent_done"] == "ok", result
    assert result["sha256"] == digest
    assert result["received"] == f"Received {3 * 1024 * 1024 + 17:,} bytes."
    assert result["download"] == "photo.bin"
    assert result["sent"].splitlines()[-1] == (
        "[INFO] All receiver(s) was/were received successfully."
    )


@pytest_twisted.inlineCallbacks
def test_text_with_a_token_and_two_receivers(make_server, procs, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"web {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    server = make_server("--tokens", str(tokens))
    text = "héllo from the browser\n" * 100
    other = procs.spawn(curl("-f", "-H", f"Authorization: Bearer {TOKEN}", server.url("/t?n=2")))
    yield server.wait_receivers("/t", 1)

    def script(browser):
        receiver = open_page(browser, server.url("/"), "/t", n=2, token=TOKEN)
        receiver.click("#receive")
        sender = open_page(browser, server.url("/"), "t", n=2, token=TOKEN)
        sender.check("input[value=text]")
        sender.fill("#text", text)
        sender.click("#send")
        receiver.wait_for_selector("#recv-status[data-done]", timeout=30000)
        sender.wait_for_selector("#send-status[data-done]", timeout=30000)
        return receiver.inner_text("#recv-text"), receiver.inner_text("#recv-sha256")

    shown, sha = yield browse(script)
    yield other.wait()
    expected = text.encode("utf-8")
    assert other.exit_code == 0, other.describe()
    assert bytes(other.out) == expected
    assert sha == hashlib.sha256(expected).hexdigest()
    assert shown == text.rstrip("\n") or shown == text


@pytest_twisted.inlineCallbacks
def test_wrong_token_is_shown_to_the_user(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"web {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    server = make_server("--tokens", str(tokens))

    def script(browser):
        page = open_page(browser, server.url("/"), "/x", token="wrong")
        page.click("#receive")
        page.wait_for_selector("#recv-status[data-done]", timeout=10000)
        return page.inner_text("#recv-status")

    shown = yield browse(script)
    assert shown == "[ERROR] Missing or invalid token.\nPass your project's token: curl -H 'Authorization: Bearer TOKEN' URL (or curl -u x:TOKEN URL).\n(HTTP 401)"


@pytest_twisted.inlineCallbacks
def test_noscript_form_sends_the_file_bytes_only(make_server, procs, tmp_path):
    server = make_server()
    data = tmp_path / "report.csv"
    digest = helpers.make_file(str(data), 200_000, seed=12)
    receiver = procs.spawn(curl("-f", "-D", str(tmp_path / "headers"), server.url("/form")))
    yield server.wait_receivers("/form", 1)

    def script(browser):
        page = browser.new_page(java_script_enabled=False)
        page.goto(server.url("/noscript?path=form&mode=file"))
        page.set_input_files("input[name=input_file]", str(data))
        with page.expect_navigation():
            page.click("form[enctype] button[type=submit]")
        return page.inner_text("body")

    shown = yield browse(script)
    yield receiver.wait()
    assert receiver.exit_code == 0, receiver.describe()
    assert receiver.sha256 == digest
    headers = (tmp_path / "headers").read_text()
    assert 'Content-Disposition: form-data; name="input_file"; filename="report.csv"' in headers
    assert shown.splitlines()[-1] == "[INFO] All receiver(s) was/were received successfully."



# ---------------------------------------------------------------- a phone on the LAN

#: A name that is not localhost, mapped to loopback: a page there is on a
#: plain-http origin that is not secure, as http://pipe:8080/ is on a LAN.
LAN_HOST = "pipe.lan"
LAN_FLAGS = [f"--host-resolver-rules=MAP {LAN_HOST} 127.0.0.1"]
PHONE = {"width": 390, "height": 844}


def lan_url(server, path: str = "/") -> str:
    return f"http://{LAN_HOST}:{server.portnum}{path}"


@pytest_twisted.inlineCallbacks
def test_a_page_on_a_plain_http_lan_origin_receives_hashes_and_saves(make_server, procs, tmp_path):
    server = make_server()
    data = tmp_path / "video.bin"
    size = 3 * 1024 * 1024 + 17
    digest = helpers.make_file(str(data), size, seed=21)
    saved = tmp_path / "saved.bin"
    sender = procs.spawn(curl("-f", "-T", str(data), "-H",
                              "Content-Disposition: attachment; filename*=UTF-8''video.bin",
                              server.url("/lan")))
    yield server.wait_sender("/lan")

    def script(browser):
        page = browser.new_page(accept_downloads=True)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(lan_url(server))
        # The origin really is one without crypto.subtle, as on a LAN.
        secure = page.evaluate("[window.isSecureContext, typeof crypto.subtle]")
        page.fill("#path", "/lan")
        page.click("#receive")
        page.wait_for_selector("#recv-status[data-done]", timeout=30000)
        with page.expect_download() as download:
            page.click("#recv-link")
        download.value.save_as(str(saved))
        return {
            "secure": secure,
            "status": page.inner_text("#recv-status"),
            "sha256": page.inner_text("#recv-sha256"),
            "name": download.value.suggested_filename,
            "errors": errors,
        }

    result = yield browse(script, LAN_FLAGS)
    yield sender.wait()
    assert result["secure"] == [False, "undefined"]
    assert result["errors"] == []
    assert result["status"] == f"Received {size:,} bytes."
    assert result["sha256"] == digest
    assert result["name"] == "video.bin"
    assert helpers.file_sha256(str(saved)) == digest
    assert sender.exit_code == 0, sender.describe()


#: Sizes around SHA-256's 64-byte blocks and its 55/56-byte padding edge.
SHA_SIZES = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 100_000]


@pytest_twisted.inlineCallbacks
def test_the_pages_sha256_is_sha256():
    """The page's own SHA-256, fed in uneven chunks, against Python's."""

    def script(browser):
        page = browser.new_page()
        page.goto("data:text/html,<p>")
        # The page's script, minus what needs its DOM.
        from pipeserver.web import pages

        source = pages._INDEX.decode()
        start = source.index("const SHA256_K")
        end = source.index('$("receive").addEventListener')
        page.add_script_tag(content=source[start:end] + "window.Sha256 = Sha256;")
        return page.evaluate(
            """(sizes) => sizes.map((size) => {
                 const data = new Uint8Array(size);
                 for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 8)) & 255;
                 const hash = new Sha256();
                 // Chunks of 1, 2, 3... bytes, crossing every block edge.
                 for (let at = 0, step = 1; at < size; at += step, step = step % 97 + 1) {
                   hash.update(data.subarray(at, Math.min(size, at + step)));
                 }
                 return hash.hex();
               })""",
            SHA_SIZES,
        )

    def expected(size):
        return hashlib.sha256(bytes((i * 7 + (i >> 8)) & 255 for i in range(size))).hexdigest()

    got = yield browse(script)
    assert got == [expected(size) for size in SHA_SIZES]


def _overflow_and_small_targets(page):
    """The page's width beyond a phone's screen (390 px), and the controls
    smaller than 44 px (touch targets)."""
    return page.evaluate(
        """() => {
             const small = [];
             for (const el of document.querySelectorAll('button, input, select, textarea, label')) {
               const box = el.getBoundingClientRect();
               if (el.offsetParent === null || el.type === 'hidden') continue;
               if (el.type === 'radio' || el.type === 'checkbox') continue;  // inside a label
               if (box.height < 44) small.push(el.tagName + '#' + (el.id || el.name || el.textContent.trim()) + ' ' + box.height);
             }
             return [document.documentElement.scrollWidth - 390, small];
           }"""
    )


@pytest_twisted.inlineCallbacks
def test_the_pages_fit_a_phone(make_server, procs, tmp_path):
    server = make_server()
    data = tmp_path / "a-long-file-name-that-goes-on-and-on-and-on-and-on.bin"
    helpers.make_file(str(data), 1000, seed=3)
    sender = procs.spawn(curl("-f", "-T", str(data), server.url("/phone")))
    yield server.wait_sender("/phone")

    def script(browser):
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                      device_scale_factor=3)
        page = context.new_page()
        page.goto(lan_url(server))
        before = _overflow_and_small_targets(page)
        link_before = page.is_visible("#recv-link")
        page.fill("#path", "/phone")
        page.click("#receive")
        page.wait_for_selector("#recv-status[data-done]", timeout=30000)
        after = _overflow_and_small_targets(page)
        sha = page.inner_text("#recv-sha256")
        link_after = page.is_visible("#recv-link")
        noscript = context.new_page()
        noscript.goto(lan_url(server, "/noscript"))
        plain = _overflow_and_small_targets(noscript)
        viewport = noscript.evaluate(
            "document.querySelector('meta[name=viewport]')?.content ?? null")
        return before, after, sha, plain, viewport, (link_before, link_after)

    before, after, sha, plain, viewport, link = yield browse(script, LAN_FLAGS)
    yield sender.wait()
    assert len(sha) == 64
    assert link == (False, True)  # Save appears once there is something to save
    # (A negative overflow: narrower than the screen; a page without a
    # viewport meta is laid out 980 px wide.)
    assert before[0] <= 0 and before[1] == []
    assert after[0] <= 0 and after[1] == []  # the sha256 wraps
    assert plain[0] <= 0 and plain[1] == []
    assert viewport == "width=device-width, initial-scale=1"


# ---------------------------------------------------------------- sender's script

#: Content-Types under which a browser would run a sender's script on our
#: origin without the receiver's nosniff and CSP sandbox (None: no header,
#: so the browser sniffs). Each sender's payload asks for marker paths by
#: script (fetch, a navigation), by markup (img) and by CSS.
HOSTILE_TYPES = [
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "text/plain, text/html",
    "x/x,text/html",
    "unknown/unknown",
    "text/html",
    None,
]


def hostile_payload(kind: str, marker: str) -> bytes:
    script = (
        f"fetch('{marker}-fetch');"
        f"setTimeout(function(){{location.href='{marker}-navigation'}},200);"
    )
    if kind == "svg":
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" '
            'xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'
            f"<script>{script}</script>"
            f'<image href="{marker}-img" width="10" height="10"/>'
            "</svg>"
        ).encode()
    # Well-formed XHTML: a document for the XML types, HTML when sniffed.
    return (
        '<html xmlns="http://www.w3.org/1999/xhtml"><head>'
        f'<link rel="stylesheet" href="{marker}-css"/></head><body>'
        f"<script>{script}</script>"
        f'<img src="{marker}-img"/><p>payload</p></body></html>'
    ).encode()


def spy_markers(server, monkeypatch):
    """Record every request for a /marker-* path the server sees (answered
    404 and kept out of the registry)."""
    seen = []
    resource = server.site.resource
    render = resource.render

    def spy(request):
        if request.path.startswith(b"/marker-"):
            seen.append(request.path.decode())
            request.setResponseCode(404)
            return b""
        return render(request)

    monkeypatch.setattr(resource, "render", spy)
    return seen


@pytest_twisted.inlineCallbacks
def open_hostile_receivers(server, procs, tmp_path):
    """For each hostile Content-Type (and an SVG form part), a sender waits
    with a payload; Chromium then opens every receiver URL. Returns the
    receiver responses' status and headers and the senders."""
    senders = []
    cases = []
    for i, ctype in enumerate(HOSTILE_TYPES):
        kind = "svg" if ctype == "image/svg+xml" else "xhtml"
        payload = tmp_path / f"payload-{i}"
        payload.write_bytes(hostile_payload(kind, f"/marker-{i}"))
        header = f"Content-Type: {ctype}" if ctype is not None else "Content-Type:"
        senders.append(procs.spawn(curl("-T", str(payload), "-H", header, server.url(f"/x{i}"))))
        cases.append((f"/x{i}", ctype))
    # An HTML form whose first part is an SVG: the part's type is passed on.
    i = len(HOSTILE_TYPES)
    svg = tmp_path / "part.svg"
    svg.write_bytes(hostile_payload("svg", f"/marker-{i}"))
    senders.append(
        procs.spawn(curl("-F", f"file=@{svg};type=image/svg+xml", server.url(f"/x{i}")))
    )
    cases.append((f"/x{i}", "form part image/svg+xml"))
    for path, _ in cases:
        yield server.wait_sender(path)

    def script(browser):
        results = []
        for path, _ in cases:
            page = browser.new_page()
            url = server.url(path)
            responses = []
            page.on("response", lambda r: r.url == url and responses.append(r))
            try:
                page.goto(url, wait_until="load")
            except PlaywrightError as error:
                # Not shown but saved (unknown/unknown with nosniff): as safe.
                assert "Download is starting" in str(error), error
            # Give a script that ran time for its fetch and navigation.
            page.wait_for_timeout(600)
            results.append((responses[0].status, responses[0].all_headers()))
            page.close()
        return results

    results = yield browse(script)
    for sender in senders:
        yield sender.wait()
    return cases, results, senders


@pytest_twisted.inlineCallbacks
def test_a_receiver_url_runs_none_of_the_senders_script(make_server, procs, tmp_path, monkeypatch):
    server = make_server()
    seen = spy_markers(server, monkeypatch)
    cases, results, senders = yield open_hostile_receivers(server, procs, tmp_path)
    assert seen == []
    for (path, ctype), (status, headers), sender in zip(cases, results, senders):
        assert status == 200, (ctype, status)
        assert headers["x-content-type-options"] == "nosniff", ctype
        assert headers["content-security-policy"] == (
            "sandbox; default-src 'none'; style-src 'unsafe-inline'"
        ), ctype
        assert sender.exit_code == 0, sender.describe()
        assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert results[-1][1]["content-type"] == "image/svg+xml"  # the form part's


@pytest_twisted.inlineCallbacks
def test_the_script_test_sees_script_when_the_headers_are_missing(
    make_server, procs, tmp_path, monkeypatch
):
    """The test above is not vacuous: without headers.harden the same
    payloads reach the marker paths (by script, markup and navigation)."""
    from pipeserver import headers

    monkeypatch.setattr(headers, "harden", lambda responseHeaders: None)
    server = make_server()
    seen = spy_markers(server, monkeypatch)
    cases, results, senders = yield open_hostile_receivers(server, procs, tmp_path)
    ran = {int(path.split("-")[1]) for path in seen if path.endswith("-fetch")}
    loaded = {int(path.split("-")[1]) for path in seen}
    # Rewritten to text/plain, the HTML ones render as text even unprotected;
    # a form part comes with "Content-Disposition: form-data", which Chromium
    # saves as a download rather than showing.
    html = {HOSTILE_TYPES.index(t) for t in ("text/plain, text/html", "x/x,text/html", "text/html")}
    assert ran == set(range(len(HOSTILE_TYPES))) - html, sorted(seen)
    assert loaded == ran, sorted(seen)
