# mypy: disable-error-code="func-returns-value,list-item"
"""``/PATH?video`` in Debian's headless Chromium (issue 21, item 5).

ffmpeg (Debian's, ``apt-get install ffmpeg``) makes a few seconds of test
pattern as WebM (VP8) and as fragmented MP4 (H.264); curl sends it to a
pipe, and the player page at ``?video`` must play it: its video element
reaches ``readyState >= 2`` (it has the current frame) and its
``currentTime`` advances. The page's own script comes from this server
(``script-src 'self'``); a CSP violation or a script error fails the test.
Skipped, loudly, where Chromium, Playwright or ffmpeg is missing; CI
(.ci/run) installs all three.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings

import pytest
import pytest_twisted

import test_browser
from helpers import curl
from test_browser import browse

FFMPEG = shutil.which("ffmpeg")
pytestmark = list(getattr(test_browser, "pytestmark", []))
if FFMPEG is None:
    reason = "VIDEO BROWSER TESTS SKIPPED: no ffmpeg on PATH (apt-get install ffmpeg)"
    warnings.warn(reason)
    pytestmark.append(pytest.mark.skip(reason=reason))

SECONDS = 4
#: ffmpeg's arguments per container: a test pattern, a keyframe a second.
ENCODINGS = {
    "webm": ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k",
             "-g", "25", "-f", "webm"],
    "mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4"],
}


def make_clip(path, container: str) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "testsrc=size=320x240:rate=25", "-t", str(SECONDS),
         *ENCODINGS[container], str(path)],
        check=True,
        timeout=60,
    )


#: Run in the player page: resolves once the video has the current frame
#: and has played half a second, with what the page saw.
PLAYED = """
() => new Promise((resolve) => {
  const video = document.getElementById("video");
  const check = () => {
    if (video.readyState >= 2 && video.currentTime > 0.5) {
      resolve({readyState: video.readyState, currentTime: video.currentTime,
               status: document.getElementById("status").textContent});
    } else {
      setTimeout(check, 50);
    }
  };
  check();
})
"""


@pytest.mark.parametrize("container", ["webm", "mp4"])
@pytest_twisted.inlineCallbacks
def test_video_page_plays_a_stream_sent_with_curl(make_server, procs, tmp_path, container):
    server = make_server()
    clip = tmp_path / f"clip.{container}"
    make_clip(clip, container)
    path = f"/screen-{container}"
    # The sender first, as in `ffmpeg ... | curl -T - URL/screen`: chunked,
    # with no Content-Type, so the page finds the type in the bytes.
    sender = procs.spawn(curl("-f", "-T", "-", server.url(path)), stdin=str(clip), name="sender")
    yield server.wait_sender(path)

    def script(browser):
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.goto(server.url(path + "?video"))
        played = page.evaluate(PLAYED)
        page.wait_for_function(
            "document.getElementById('status').textContent.startsWith('The stream ended')",
            timeout=30000,
        )
        return played, page.inner_text("#status"), errors

    played, status, errors = yield browse(script)
    yield sender.wait()
    assert errors == []
    assert played["readyState"] >= 2 and played["currentTime"] > 0.5, played
    # The type the page found in the first bytes (the sender sent none).
    codec = {"webm": 'codecs="vp8")', "mp4": 'codecs="avc1.'}[container]
    assert status.startswith(f"The stream ended (video/{container}; {codec}"), status
    assert sender.exit_code == 0, sender.describe()
    assert sender.lines()[-1] == "[INFO] All receiver(s) was/were received successfully."


@pytest_twisted.inlineCallbacks
def test_video_page_asks_for_a_token(make_server, procs, tmp_path):
    token = "video-token-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"tv {__import__('hashlib').sha256(token.encode()).hexdigest()}\n")
    server = make_server("--tokens", str(tokens))
    clip = tmp_path / "clip.webm"
    make_clip(clip, "webm")
    sender = procs.spawn(
        curl("-f", "-H", f"Authorization: Bearer {token}", "-T", "-", server.url("/tv")),
        stdin=str(clip),
    )
    yield server.wait_sender("/tv")

    def script(browser):
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url("/api/v1/pipe/tv?video"))
        page.wait_for_selector("#token-form:not([hidden])", timeout=15000)
        asked = page.inner_text("#status")
        page.fill("#token", token)
        page.click("#token-form button")
        played = page.evaluate(PLAYED)
        return asked, played, errors

    asked, played, errors = yield browse(script)
    yield sender.wait()
    assert errors == []
    assert asked == "This server asks for a token."
    assert played["readyState"] >= 2 and played["currentTime"] > 0.5, played
    assert sender.exit_code == 0, sender.describe()
