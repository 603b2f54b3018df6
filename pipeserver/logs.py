"""twistd's log lines: text as twistd writes them, but cheaper; or JSON.

``--log-format text`` (the default) writes exactly the lines of twistd's own
text observer (``formatEventAsClassicLogText``), formatting plain events
with ``str.format`` and the timestamp once a second: Twisted's generic
formatter costs ~25 µs an event, which was a tenth of the server's CPU per
request (one access line each). Anything unusual takes Twisted's code.

``--log-format json``: one JSON object per line instead of text.

Each line is ``twisted.logger.eventAsJSON`` of the event (so
``eventFromJSON`` reads it back) plus ``"text"``, the formatted message,
and ``"level"`` (``info``, ...). The
access line (namespace ``pipeserver.access``) carries its fields: ``method``,
``path``, ``status``, ``received``, ``sent``, ``duration``, ``project``.

``twistd pipe --log-format json`` works by setting the observer on the
twistd application (see :class:`LoggingService`), which twistd uses in place
of its own text observer; ``--logfile`` and ``--nodaemon`` keep their meaning.
``twistd --logger=pipeserver.logs.json_observer`` (stdout) works too.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import IO, Any, Callable, List, Mapping, Optional, Tuple, cast

from twisted.application import service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    eventAsJSON,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python import logfile
from twisted.python.components import Componentized

FORMATS = ("text", "json")


_access = Logger(namespace="pipeserver.access")


def access_line(request: Any, now: float) -> None:
    """Log one access line for ``request`` (``PipeSite.log``), ``now`` on
    the site's clock: never a header, query or body."""
    code = "aborted" if getattr(request, "cutShort", False) else request.code
    path = getattr(request, "path", None)
    method = getattr(request, "method", None)
    _access.info(
        "{method} {path} {status} in={received} out={sent} {duration:.3f}s project={project}",
        method=method.decode("latin-1", "replace") if isinstance(method, bytes) else "-",
        path=path.decode("utf-8", "replace") if isinstance(path, bytes) else "-",
        status=code,
        received=request.bodyBytes,
        sent=request.sentLength,
        duration=max(0.0, now - request.startedAt),
        project=request.project or "-",
    )


def _json_line(event: LogEvent) -> Optional[str]:
    event = dict(event)
    event["text"] = formatEvent(event)
    level = event.get("log_level")
    if level is not None:
        event["level"] = getattr(level, "name", str(level))
    return eventAsJSON(event) + "\n"


def _classic_line(event: LogEvent) -> Optional[str]:
    return formatEventAsClassicLogText(event, formatTime=_stamp)


# (the second, its text): a timestamp shows whole seconds only.
_lastStamp: List[Tuple[Optional[int], str]] = [(None, "-")]


def _stamp(when: Optional[float]) -> str:
    if when is None:
        return "-"
    second = int(when // 1)
    cached = _lastStamp[0]
    if cached[0] != second:
        cached = (second, formatTime(float(second), timeFormatRFC3339))
        _lastStamp[0] = cached
    return cached[1]


def _text_line(event: LogEvent) -> Optional[str]:
    """``formatEventAsClassicLogText(event)``, the same text, but plain
    events (a format string with fields, no failure) formatted by
    ``str.format``, which renders them as Twisted's formatter does."""
    fmt = event.get("log_format")
    if type(fmt) is not str or "()" in fmt or "log_failure" in event:
        return _classic_line(event)  # calls in the format, tracebacks
    try:
        text = fmt.format(**event)
    except Exception:
        return _classic_line(event)  # Twisted writes what went wrong
    if not text:
        return None
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    elif type(system) is not str:
        return _classic_line(event)
    line = f"{_stamp(event.get('log_time'))} [{system}] {text}"
    return line.replace("\n", "\n\t") + "\n"


def text_file_observer(out: IO[Any]) -> FileLogObserver:
    """Writes each event to ``out`` as twistd's text observer would."""
    return FileLogObserver(out, _text_line)


def json_file_observer(out: IO[Any]) -> FileLogObserver:
    """Writes each event to ``out`` as one line of JSON."""
    return FileLogObserver(out, _json_line)


def json_observer() -> FileLogObserver:
    """For ``twistd --logger=pipeserver.logs.json_observer``: JSON on stdout."""
    return json_file_observer(sys.stdout)


#: twistd's options (a ``usage.Options``, a dict), or None under a ``.tac``.
TwistdOptions = Optional[Mapping[str, Any]]


def observer_factory(
    log_format: str, twistd_options: TwistdOptions
) -> Optional[Callable[[], FileLogObserver]]:
    """What makes the observer for ``--log-format``, or None where twistd's
    own must stay: it was asked for syslog, or (a ``.tac`` file builds the
    service) its options are unknown, so only twistd knows where text goes."""
    if twistd_options is None and log_format == "text":
        return None
    if twistd_options is not None and twistd_options.get("syslog"):
        return None
    make = json_file_observer if log_format == "json" else text_file_observer
    return lambda: make(twistd_log_file(twistd_options))


def twistd_log_file(twistd_options: TwistdOptions) -> IO[Any]:
    """Where twistd would write its text log, for these twistd options."""
    name = twistd_options.get("logfile") if twistd_options is not None else None
    nodaemon = twistd_options.get("nodaemon", True) if twistd_options is not None else True
    if name == "-" or (not name and nodaemon):
        return sys.stdout
    logFile: logfile.LogFile = logfile.LogFile.fromFullPath(name or "twistd.log")
    # As twistd does for its own log file: SIGUSR1 rotates it, unless
    # something else has claimed that signal.
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Optional[FrameType]) -> None:
            from twisted.internet import reactor

            cast(IReactorFromThreads, reactor).callFromThread(logFile.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    # Not an IO, but file-like: write and flush, all FileLogObserver calls.
    return cast(IO[Any], logFile)


class LoggingService(service.MultiService):
    """The service tree's root: when it joins a twistd application it hands
    that application a log observer, which twistd then logs to."""

    #: Builds the observer, or None to keep twistd's default.
    observerFactory: Optional[Callable[[], FileLogObserver]] = None

    def setServiceParent(self, parent: object) -> None:
        """``parent``: an application (a Componentized, whose ILogObserver
        twistd logs to) or any IServiceCollection."""
        super().setServiceParent(parent)
        if self.observerFactory is None:
            return
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None:
            parent.setComponent(ILogObserver, self.observerFactory())
