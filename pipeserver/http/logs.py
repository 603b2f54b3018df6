"""twistd's log lines: text as twistd writes them, but cheaper; or JSON.

``--log-format text`` (the default) writes exactly the lines of twistd's own
text observer (``formatEventAsClassicLogText``), formatting plain events
with ``str.format`` and the timestamp once a second: Twisted's generic
formatter costs ~25 µs an event, which was a tenth of the server's CPU per
request (one access line each). Anything unusual takes Twisted's code.

``--log-format json``: one compact JSON object per line instead of text
(:func:`json_event`): ``time`` (ISO 8601, UTC), ``level``, ``namespace``,
``text``; an access line (namespace ``pipeserver.access``) adds its fields,
each always of one type: ``method``, ``path``, ``result`` (:data:`RESULTS`),
``project``, ``mode`` (``plain``, ``queue``, ``live``: SPEC §12; the
text line names it only when not plain) (strings), ``status`` (a number, 0 if no response head went
out), ``received``, ``sent`` (bytes), ``duration`` (seconds).

``twistd pipe --log-format json`` works by setting the observer on the
twistd application (see :class:`LoggingService`), which twistd uses in place
of its own text observer; ``--logfile`` and ``--nodaemon`` keep their meaning.
``twistd --logger=pipeserver.http.logs.json_observer`` (stdout) works too.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime, timezone
from types import FrameType
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Protocol, Tuple, cast

from twisted.application import service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python import logfile
from twisted.python.compat import ioType
from twisted.python.components import Componentized

from pipeserver.http import _twisted
from pipeserver.domain.interfaces import Outcome

FORMATS = ("text", "json")


_access = Logger(namespace="pipeserver.access")

#: Why a request ended, as its access line says (``result``): it got its
#: whole answer (``ok``), an error answer instead of a pipe (``refused``),
#: its pipe's deadline passed (``timed_out``), the server ended it before
#: its response ended (``cut``: its counterpart failed or left, it stalled,
#: or the shutdown), or its client went away first (``left``).
RESULTS = ("ok", "refused", "timed_out", "cut", "left")


class AccessRecord(Protocol):
    """What an access line reads of a request (``request.PipeRequest``)."""

    method: bytes
    path: bytes
    code: int
    startedWriting: int
    #: Its connection went before its response ended.
    cutShort: bool
    #: Why the server ended it early (a pipe's ``Outcome``), if it did.
    endedBy: Optional[Outcome]
    bodyBytes: int
    sentLength: int
    startedAt: float
    project: str
    #: What its path was for it: plain, queue or live (SPEC §12).
    mode: str


def result(request: AccessRecord) -> str:
    """One word of :data:`RESULTS` for how ``request`` ended."""
    if request.endedBy is Outcome.TIMED_OUT:
        return "timed_out"
    if request.endedBy is not None:
        return "cut"
    if request.code >= 400:
        # Even when the client went before the end: a sender refused after
        # "100 Continue" may close as soon as it reads the refusal.
        return "refused"
    return "left" if request.cutShort else "ok"


_ACCESS_FORMAT = (
    "{method} {path} {status} {result} in={received} out={sent} {duration:.3f}s project={project}"
)
_ACCESS_FORMAT_MODE = _ACCESS_FORMAT.replace("project=", "mode={mode} project=")
#: What a text line names as the access line's system (``_text_line``).
_ACCESS_SYSTEM = f"{_access.namespace}#info"


def access_line(request: AccessRecord, now: float) -> None:
    """Log one access line for ``request`` (``PipeSite.log``), ``now`` on
    the site's clock: never a header, query or body. ``status`` is always a
    number: the response's status, 0 when no response head was sent."""
    method, path = request.method, request.path
    sent_head = request.startedWriting or request.code >= 400
    # A queue's or a live stream's party says so; a plain one's line is as it was.
    mode = request.mode
    form = _ACCESS_FORMAT if mode == "plain" else _ACCESS_FORMAT_MODE
    fields = dict(
        method=method.decode("latin-1", "replace") if isinstance(method, bytes) else "-",
        path=path.decode("utf-8", "replace") if isinstance(path, bytes) else "-",
        status=request.code if sent_head else 0,
        result=result(request),
        received=request.bodyBytes,
        sent=request.sentLength,
        duration=round(max(0.0, now - request.startedAt), 6),
        project=request.project or "-",
        mode=mode,
    )
    sole = _soleTextObserver()
    if sole is not None:
        # The text _text_line makes of the event Logger.emit would build,
        # written without building it (a tenth of a small transfer's CPU
        # went to the event, Logger.emit and the publisher). Should the
        # write fail, the event's way below meets the same failure, and the
        # publisher deals with it as it always did.
        line = f"{_stamp(time.time())} [{_ACCESS_SYSTEM}] {form.format(**fields)}"
        try:
            sole.writeText(line.replace("\n", "\n\t") + "\n")
            return
        except Exception:
            pass
    _access.info(form, **fields)


def _soleTextObserver() -> Optional["TextFileObserver"]:
    """Our text observer, when it is the only one an access line's event
    would reach (as under twistd with ``--log-format text``); None when
    anything else listens (JSON, a test's observer, twistd's buffer before
    logging began) or that cannot be known (_twisted.log_observers)."""
    observers = _twisted.log_observers(_access.observer)
    if observers is not None and len(observers) == 1 and isinstance(observers[0], TextFileObserver):
        return observers[0]
    return None


#: The fields of an access line, as its JSON carries them (one type each).
ACCESS_FIELDS = (
    "method", "path", "status", "result", "received", "sent", "duration", "project", "mode"
)


def _iso(when: Optional[float]) -> str:
    """An event's time as ISO 8601 in UTC, to the millisecond."""
    if when is None:
        return ""
    stamp = datetime.fromtimestamp(when, timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_event(event: LogEvent) -> Dict[str, Any]:
    """The JSON object of one event: ``time`` (ISO 8601, UTC), ``level``,
    ``namespace``, ``text`` (the formatted message), the access line's own
    fields for an access line, and ``traceback`` for a failure. Every other
    field of the event is in ``text`` only, so each key has one type."""
    level = event.get("log_level")
    line: Dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": str(getattr(level, "name", "info")),
        "namespace": str(event.get("log_namespace", "-")),
        "text": formatEvent(event),
    }
    if event.get("log_namespace") == _access.namespace:
        for name in ACCESS_FIELDS:
            line[name] = event.get(name)
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    return line


def _json_line(event: LogEvent) -> Optional[str]:
    return json.dumps(json_event(event), separators=(",", ":"), default=str) + "\n"


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


class TextFileObserver(FileLogObserver):
    """Writes each event to a file as twistd's text observer would
    (:func:`_text_line`); an access line's text may come already made
    (:meth:`writeText`)."""

    def __init__(self, outFile: IO[Any]) -> None:
        super().__init__(outFile, _text_line)
        self._out = outFile
        # As FileLogObserver decides: text, or UTF-8 for a file of bytes.
        self._bytes = ioType(outFile) is not str

    def writeText(self, text: str) -> None:
        """Write ``text`` as ``__call__`` writes an event's."""
        self._out.write(text.encode("utf-8") if self._bytes else text)
        self._out.flush()


def text_file_observer(out: IO[Any]) -> FileLogObserver:
    """Writes each event to ``out`` as twistd's text observer would."""
    return TextFileObserver(out)


def json_file_observer(out: IO[Any]) -> FileLogObserver:
    """Writes each event to ``out`` as one line of JSON."""
    return FileLogObserver(out, _json_line)


def json_observer() -> FileLogObserver:
    """For ``twistd --logger=pipeserver.http.logs.json_observer``: JSON on stdout."""
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
