"""``twistd -n pipe`` configured by ``PIPE_*`` environment variables.

What the container image runs (``python -m pipeserver.ops.environ``), and what
``tap/pipe.tac`` reads. Every option ``--NAME`` of ``twistd pipe`` is the
variable ``PIPE_NAME`` (upper case, ``_`` for ``-``): ``PIPE_WAIT_TIMEOUT=60``,
``PIPE_TOKENS=/etc/pipeserver/tokens``, ``PIPE_LOG_FORMAT=json``, ...
``PIPE_LISTEN``, ``PIPE_METRICS_LISTEN`` and ``PIPE_TRUSTED_PROXY`` take
space-separated lists.
An unset or empty variable leaves the option's default. A ``PIPE_*``
variable that names no option (a typo: ``PIPE_WAIT_TIMOUT``) is refused,
in one line naming the closest option's variable: a setting the operator
believes in force must not be silently ignored. Arguments given to
``python -m pipeserver.ops.environ`` are passed on to ``twistd pipe`` after them.

``python -m pipeserver.ops.environ healthcheck`` GETs ``/api/v1/pipe/health`` on
the first ``PIPE_LISTEN`` endpoint (tcp:8080 by default) and exits 0 if it
answers 200 with ``"status": "ok"``: the image's HEALTHCHECK.
``healthcheck URL`` asks that server instead (``http://127.0.0.1:8080``, its
health path added), as the systemd units in tap/ do.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import TYPE_CHECKING, List, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from pipeserver.ops.tap import Options

PREFIX = "PIPE_"
#: Options that may be given several times: a space-separated list each.
REPEATABLE = ("listen", "metrics-listen", "trusted-proxy")
DEFAULT_LISTEN = "tcp:8080"


def variable(option: str) -> str:
    """``wait-timeout`` -> ``PIPE_WAIT_TIMEOUT``."""
    return PREFIX + option.upper().replace("-", "_")


def _options() -> Tuple[List[str], List[str]]:
    from pipeserver.ops.tap import Options

    parameters = [entry[0] for entry in getattr(Options, "optParameters", [])]
    flags = [entry[0] for entry in getattr(Options, "optFlags", [])]
    return parameters, flags


def option_args(environ: Mapping[str, str]) -> List[str]:
    """The ``twistd pipe`` arguments the ``PIPE_*`` variables stand for."""
    parameters, flags = _options()
    args: List[str] = []
    for name in REPEATABLE:
        for endpoint in environ.get(variable(name), "").split():
            args += ["--" + name, endpoint]
    for name in parameters:
        value = environ.get(variable(name), "")
        if value:
            args += ["--" + name, value]
    for name in flags:
        if environ.get(variable(name), "").lower() in ("1", "true", "yes", "on"):
            args.append("--" + name)
    return args


def unknown_variables(environ: Mapping[str, str]) -> List[str]:
    """``PIPE_*`` variables that name no option (a typo would go unnoticed)."""
    parameters, flags = _options()
    known = {variable(name) for name in (*REPEATABLE, *parameters, *flags)}
    return sorted(key for key in environ if key.startswith(PREFIX) and key not in known)


def refusal(environ: Mapping[str, str]) -> Optional[str]:
    """The one-line complaint about unknown ``PIPE_*`` variables, or None."""
    unknown = unknown_variables(environ)
    if not unknown:
        return None
    parameters, flags = _options()
    known = [variable(name) for name in (*REPEATABLE, *parameters, *flags)]
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        named.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return (
        f"pipeserver: {', '.join(named)}: no option of `twistd pipe` has this "
        "variable; refusing to start without a setting you meant to give "
        "(PIPE_NAME is --NAME: twistd pipe --help lists them)"
    )


def options(environ: Mapping[str, str]) -> "Options":
    """``twistd pipe``'s options from ``environ`` (what tap/pipe.tac
    serves): unknown ``PIPE_*`` variables and bad values are refused, in
    one line (``tap.StartError``)."""
    from twisted.python import usage

    from pipeserver.ops.tap import Options, StartError

    complaint = refusal(environ)
    if complaint is not None:
        raise StartError(complaint)
    parsed = Options()
    try:
        parsed.parseOptions(option_args(environ))
    except usage.UsageError as error:
        raise StartError(f"pipeserver: {_culprit(environ) or 'PIPE_* variables'}: {error}") from None
    return parsed


def _culprit(environ: Mapping[str, str]) -> Optional[str]:
    """``PIPE_NAME=value`` of the first variable whose value alone is
    refused (Twisted's message does not name the option)."""
    from twisted.python import usage

    from pipeserver.ops.tap import Options

    for name in environ:
        if not name.startswith(PREFIX):
            continue
        alone = option_args({name: environ[name]})
        try:
            Options().parseOptions(alone)
        except usage.UsageError:
            return f"{name}={environ[name]}"
    return None


#: What the health check asks (pipeserver/web/health.py).
HEALTH_PATH = "/api/v1/pipe/health"


def health_url(environ: Mapping[str, str]) -> Optional[str]:
    """The health URL of the first tcp, tcp6 or ssl endpoint of
    ``PIPE_LISTEN``, on loopback unless it listens on one address only."""
    for endpoint in (environ.get(variable("listen"), "") or DEFAULT_LISTEN).split():
        kind, _, rest = endpoint.partition(":")
        kind = kind.strip().lower()
        if kind not in ("tcp", "tcp6", "ssl"):
            continue
        # Endpoint strings escape a colon in a value as "\\:".
        fields = [f.replace("\\:", ":") for f in re.split(r"(?<!\\):", rest)]
        port = fields[0]
        if port.startswith("port="):
            port = port[len("port="):]
        interface = ""
        for field in fields[1:]:
            if field.startswith("interface="):
                interface = field[len("interface="):]
        if interface in ("", "0.0.0.0", "::"):
            interface = "::1" if kind == "tcp6" else "127.0.0.1"
        host = f"[{interface}]" if ":" in interface else interface
        scheme = "https" if kind == "ssl" else "http"
        return f"{scheme}://{host}:{port}{HEALTH_PATH}"
    return None


def healthcheck(environ: Mapping[str, str], base: Optional[str] = None) -> int:
    """0 if the server answers its health endpoint with ``"status": "ok"``;
    ``base`` (a URL without a path) names the server, else ``PIPE_LISTEN``."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    if base is not None:
        url = base if base.rstrip("/").endswith(HEALTH_PATH) else base.rstrip("/") + HEALTH_PATH
    else:
        found = health_url(environ)
        if found is None:
            print("no tcp or ssl endpoint in PIPE_LISTEN to check", file=sys.stderr)
            return 0
        url = found
    # A self-signed certificate is fine: this asks whether the server answers.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            status, body = response.status, response.read(4096)
    except urllib.error.HTTPError as failure:  # 503 while draining
        status, body = failure.code, failure.read(4096)
    except OSError as failure:
        print(url, failure, file=sys.stderr)
        return 1
    try:
        state = json.loads(body).get("status")
    except (ValueError, AttributeError):
        state = None
    print(url, status, state)
    return 0 if status == 200 and state == "ok" else 1


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["healthcheck"] and len(argv) <= 2:
        raise SystemExit(healthcheck(os.environ, *argv[1:]))
    complaint = refusal(os.environ)
    if complaint is not None:
        raise SystemExit(complaint)
    from twisted.scripts import twistd

    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "pipe", *option_args(os.environ), *argv]
    twistd.run()


if __name__ == "__main__":
    main()
