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
from pipeserver.domain.interfaces import Request

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


#: How every recipe of /help passes the token, on a server that asks for one.
_TOKEN_ARG = """-H "Authorization: Bearer $TOKEN" """


def help_page(request: Request, tokens: bool = False) -> bytes:
    """curl recipes for this host; on a server with ``--tokens`` each one
    passes ``$TOKEN``, which the page says to set first."""
    url = base_url(request)
    auth = _TOKEN_ARG if tokens else ""
    if tokens:
        intro = """This server asks for a token: your project's. Set it once in your shell,
    TOKEN=your-token
and every recipe below passes it (or: curl -u x:$TOKEN URL).
"""
    else:
        intro = ""
    return _text(
        request,
        f"""Help for pipeserver {__version__}
A pipe is any path: a sender PUTs or POSTs to it, receivers GET it.
{intro}
======= Get  =======
curl {auth}{url}/mypath

======= Send =======
# Send asdf
echo 'asdf' | curl {auth}-T - {url}/mypath

# Send a file
curl {auth}-T myfile {url}/mypath

# Send a directory (zip)
zip -q -r - ./mydir | curl {auth}-T - {url}/mypath

# Send a directory (tar.gz)
tar zfcp - ./mydir | curl {auth}-T - {url}/mypath

# Encryption (openssl asks each side for the same password)
## Send
cat myfile | openssl aes-256-cbc -pbkdf2 | curl {auth}-T - {url}/mypath
## Get
curl {auth}{url}/mypath | openssl aes-256-cbc -pbkdf2 -d

======= Many receivers =======
seq 1000 | curl {auth}-T - '{url}/mypath?n=3'
curl {auth}'{url}/mypath?n=3'   # three times: every receiver gets every byte
{_service_help(url, auth)}{_surface_help(url, auth)}""" + ("" if tokens else f"""
======= Tokens =======
# When the server asks for a token
curl -H 'Authorization: Bearer TOKEN' {url}/mypath
"""),
    )


def _service_help(url: str, auth: str) -> str:
    """The /help lines for service paths (SPEC §12): a queue, a live stream."""
    return f"""
======= Worker pool (?queue): each message to one receiver =======
# Each replica of the consumer:
while curl {auth}-fsS '{url}/jobs?queue' | ./handle-job; do :; done
# Each producer, one request per message:
echo '{{"job": 42}}' | curl {auth}-fsS -T - '{url}/jobs?queue'

======= Live stream (?live): readers join and leave, from now =======
./service 2>&1 | curl {auth}-T - '{url}/logs?live=line'
curl {auth}-sSN '{url}/logs?live'   # any time, any number of times
"""


def _surface_help(url: str, auth: str) -> str:
    """The /help lines for what the seed product's users look for (issue 21)."""
    return f"""
======= Save, show, watch =======
# Save under a name of your choosing (this receiver only)
curl {auth}-OJ '{url}/mypath?filename=report.pdf'
# In a browser: show it (download=0) or save it (download=1)
{url}/mypath?download=0
# Watch a transfer's progress without receiving it (Server-Sent Events; a page in a browser)
curl {auth}-N '{url}/mypath?progress'
# Watch a video stream: send WebM or fragmented MP4...
ffmpeg -re -i movie.mp4 -c:v libvpx -deadline realtime -b:v 1M -f webm - | curl {auth}-T - {url}/screen
# ...and open this page in a browser
{url}/screen?video

======= Seed product URLs =======
curl {url}/api/v1/pipe/health         # JSON: status, version, fds, waiting, active...
curl {auth}-T - {url}/api/v1/pipe/mypath    # the same pipe as {url}/mypath
# Reserved names fold: in any case, with a trailing / or ., %-encoded
curl {auth}-T - {url}/Help                  # refused, as /help is
"""


# A phone's screen: nothing wider than it, controls of at least 44 px.
_STYLE = (
    "body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}"
    "h2{font-size:1.1em;margin-top:1.5em}"
    "label{display:inline-flex;align-items:center;gap:.4em;min-height:44px;"
    "margin-right:1em;max-width:100%}"
    "input,select,button{min-height:44px;font-size:1rem;box-sizing:border-box;max-width:100%}"
    "input[name=path]{min-width:0;width:14em;max-width:60vw}"
    "textarea{width:100%;box-sizing:border-box;font-size:1rem}"
    "code,a{overflow-wrap:anywhere}"
)


def inline_script(page: bytes) -> bytes:
    """The CSP source that admits ``page``'s one inline script and no
    other: ``'sha256-...'``, its hash."""
    script = re.search(rb"<script>(.*?)</script>", page, re.S)
    assert script is not None
    return b"'sha256-" + base64.b64encode(hashlib.sha256(script.group(1)).digest()) + b"'"


def load_page(name: str, policy: bytes) -> Tuple[bytes, bytes]:
    """One of our pages, and a Content-Security-Policy that admits only its
    own inline script (by hash), then ``policy`` (what else it may do)."""
    page = resources.files("pipeserver").joinpath(name).read_bytes()
    return page, b"default-src 'none'; script-src " + inline_script(page) + b"; " + policy


# The browser page: requests to this server only.
_INDEX, _INDEX_CSP = load_page(
    "index.html",
    b"style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; "
    b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
)


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
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pipeserver: send</title><style>{_STYLE}</style></head>
<body>
<h1>Send to {html.escape(path)}</h1>
<p>This page sends without JavaScript, in two steps.</p>
<h2>1. Where to, and what</h2>
<p>The path to send to, and whether you send a file or typed text:
<b>Change</b> shows this page again for them.</p>
<form method="GET" action="/noscript">
<label>Path <input name="path" value="{action}"></label>
<label>Send a <select name="mode"><option value="file">file</option>
<option value="text"{' selected' if mode == b'text' else ''}>text</option></select></label>
<button type="submit">Change</button></form>
<h2>2. Send</h2>
<p>{'Type the text' if mode == b'text' else 'Choose the file'} and press <b>Send</b>. Either side may
start first: the browser waits for a receiver of {html.escape(path)}, then shows how the
transfer went.</p>
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
