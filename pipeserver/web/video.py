"""``GET /PATH?video``: a page that plays the pipe ``PATH`` as it streams.

Opened directly, a video's bytes do not play in a browser (its player asks
for the URL again, which a pipe cannot serve twice; and receivers' responses
are sandboxed). This page fetches the stream once, as one receiver, and feeds
it to a Media Source Extensions ``SourceBuffer`` (WebM or fragmented MP4,
the type from ``?video=TYPE``, the sender's Content-Type, or the stream's
first bytes). The page itself never joins the pipe: it is static, the same
for every path, and its script is ours, served from ``/api/v1/pipe/video.js``
(``script-src 'self'``, no inline script; the media is a ``blob:`` URL).
"""

from __future__ import annotations

from importlib import resources

from pipeserver import errors
from pipeserver.domain.interfaces import Request
from pipeserver.paths import VIDEO_SCRIPT

#: The player page's policy: our script, requests to this server (the
#: stream), the MediaSource's blob: URL as the video's source, nothing else.
PAGE_CSP = (
    b"default-src 'none'; script-src 'self'; connect-src 'self'; media-src blob:; "
    b"style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)

_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pipeserver: video</title>
<style>
html,body{{margin:0;height:100%;background:#000;color:#ddd;font-family:sans-serif}}
video{{display:block;width:100%;height:calc(100% - 2.5em);background:#000}}
#bar{{height:2.5em;display:flex;align-items:center;gap:1em;padding:0 1em}}
#token-form[hidden]{{display:none}}
</style></head>
<body>
<video id="video" controls autoplay muted playsinline></video>
<div id="bar"><span id="status">Starting...</span>
<form id="token-form" hidden><label>Token <input id="token" type="password"
autocomplete="off"></label> <button type="submit">Play</button></form></div>
<script src="{VIDEO_SCRIPT}"></script>
</body></html>
""".encode("utf-8")

_SCRIPT = resources.files("pipeserver").joinpath("video.js").read_bytes()


def page(request: Request) -> bytes:
    """The player page (any pipe path with ``?video``)."""
    errors.plain_headers(request, b"text/html; charset=utf-8")
    request.setHeader(b"content-security-policy", PAGE_CSP)
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"content-length", b"%d" % len(_PAGE))
    return b"" if request.method == b"HEAD" else _PAGE


def script(request: Request) -> bytes:
    """``/api/v1/pipe/video.js``, the player page's script."""
    if request.getHeader(b"service-worker") == b"script":
        # Ours, and harmless; but nothing on this origin registers a worker.
        raise errors.service_worker()
    errors.plain_headers(request, b"text/javascript; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache")
    return _SCRIPT
