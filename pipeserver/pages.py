"""The reserved pages: ``/``, ``/noscript``, ``/help``, ``/version`` and friends."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import unicodedata
from importlib import resources
from typing import Optional, Tuple

from pipeserver import __version__, errors
from pipeserver.headers import PAGE_CSP
from pipeserver.interfaces import Request

# Every page also gets "X-Content-Type-Options: nosniff" (headers.harden).


def _text(request: Request, body: str, ctype: bytes = errors.TEXT_PLAIN) -> bytes:
    # text/plain without a charset, exactly as piping-server sends /help and
    # /version (its clients and test suite compare the header).
    errors.plain_headers(request, ctype)
    if not request.responseHeaders.hasHeader(b"content-security-policy"):
        request.setHeader(b"content-security-policy", PAGE_CSP)
    return body.encode("utf-8")


def base_url(request: Request) -> str:
    """The URL clients reach us at, as the request names it (proxies included)."""
    proto = request.getHeader(b"x-forwarded-proto")
    if proto:
        scheme = proto.split(b",")[0].strip().decode("latin-1")
    else:
        scheme = "https" if request.isSecure() else "http"
    host = request.getHeader(b"host")
    if host:
        name = host.decode("latin-1")
    else:
        address = request.getHost()
        name = f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', '')}"
    return f"{scheme}://{name}"


def version(request: Request) -> bytes:
    return _text(request, __version__ + "\n")


def help_page(request: Request) -> bytes:
    url = base_url(request)
    return _text(
        request,
        f"""Help for pipeserver {__version__}
A pipe is any path: a sender PUTs or POSTs to it, receivers GET it.

======= Get  =======
curl {url}/mypath

======= Send =======
# Send asdf
echo 'asdf' | curl -T - {url}/mypath

# Send a file
curl -T myfile {url}/mypath

# Send a directory (zip)
zip -q -r - ./mydir | curl -T - {url}/mypath

# Send a directory (tar.gz)
tar zfcp - ./mydir | curl -T - {url}/mypath

# Encryption
## Send
cat myfile | openssl aes-256-cbc | curl -T - {url}/mypath
## Get
curl {url}/mypath | openssl aes-256-cbc -d

======= Many receivers =======
seq 1000 | curl -T - '{url}/mypath?n=3'
curl '{url}/mypath?n=3'   # three times: every receiver gets every byte
{_surface_help(url)}
======= Tokens =======
# When the server asks for a token
curl -H 'Authorization: Bearer TOKEN' {url}/mypath
""",
    )


def _surface_help(url: str) -> str:
    """The /help lines for what the seed product's users look for (issue 21)."""
    return f"""
======= Save, show, watch =======
# Save under a name of your choosing (this receiver only)
curl -OJ '{url}/mypath?filename=report.pdf'
# In a browser: show it (download=0) or save it (download=1)
{url}/mypath?download=0
# Watch a video stream: send WebM or fragmented MP4...
ffmpeg -re -i movie.mp4 -c:v libvpx -deadline realtime -b:v 1M -f webm - | curl -T - {url}/screen
# ...and open this page in a browser
{url}/screen?video

======= Seed product URLs =======
curl {url}/api/v1/pipe/health         # JSON: status, version, fds, waiting, active...
curl -T - {url}/api/v1/pipe/mypath    # the same pipe as {url}/mypath
# Reserved names fold: in any case, with a trailing / or ., %-encoded
curl -T - {url}/Help                  # refused, as /help is
"""


_STYLE = "body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}"


def _load_index() -> Tuple[bytes, bytes]:
    """The browser page, and a Content-Security-Policy that admits only its
    own inline script (by hash) and requests to this server."""
    page = resources.files("pipeserver").joinpath("index.html").read_bytes()
    script = re.search(rb"<script>(.*?)</script>", page, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1)).digest())
    csp = (
        b"default-src 'none'; script-src 'sha256-" + digest + b"'; "
        b"style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; "
        b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return page, csp


_INDEX, _INDEX_CSP = _load_index()


def index(request: Request) -> bytes:
    request.setHeader(b"content-security-policy", _INDEX_CSP)
    errors.plain_headers(request, b"text/html; charset=utf-8")
    return _INDEX


def form_path(raw: bytes) -> Optional[str]:
    """The pipe path the ``/noscript`` form posts to, from its ``path``
    parameter; None unless it is nothing but a path on this server.

    It becomes the form's action and a link, which a browser resolves as a
    URL: ``\\host``, ``/\\host`` and ``//host`` name another host, and tabs
    and newlines are dropped first, so ``/<TAB>/host`` does too. Slashes in
    front are collapsed into one (``mypath`` and ``//mypath`` are ``/mypath``);
    a backslash, whitespace or control or format character anywhere is refused.
    """
    path = raw.decode("utf-8", "replace")
    for char in path:
        if char == "\\" or char.isspace() or unicodedata.category(char) in ("Cc", "Cf"):
            return None
    return "/" + path.lstrip("/")


def noscript(request: Request) -> bytes:
    path = form_path(request.args.get(b"path", [b"mypath"])[0])
    if path is None:
        raise errors.noscript_path_invalid()
    mode = request.args.get(b"mode", [b"file"])[0]
    field = (
        '<textarea name="input_text" rows="8" cols="60"></textarea>'
        if mode == b"text"
        else '<input type="file" name="input_file">'
    )
    action = html.escape(path, quote=True)
    request.setHeader(
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"base-uri 'none'; frame-ancestors 'none'",
    )
    return _text(
        request,
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>pipeserver: send</title><style>{_STYLE}</style></head>
<body>
<h1>Send to {html.escape(path)}</h1>
<form method="GET" action="/noscript">
<label>Path <input name="path" value="{action}"></label>
<select name="mode"><option value="file">file</option>
<option value="text"{' selected' if mode == b'text' else ''}>text</option></select>
<button type="submit">Change</button></form>
<form method="POST" action="{action}" enctype="multipart/form-data">
{field}
<button type="submit">Send</button></form>
<p>Receive with <code>curl {html.escape(base_url(request))}{html.escape(path)}</code>
or open <a href="{action}">{html.escape(path)}</a>.</p>
</body></html>
""",
        b"text/html; charset=utf-8",
    )


def favicon(request: Request) -> bytes:
    request.setResponseCode(204)
    request.setHeader(b"content-security-policy", PAGE_CSP)
    return b""


def robots(request: Request) -> bytes:
    request.setResponseCode(404)
    return _text(request, "")
