"""``--log-format json``: one JSON object per line instead of text.

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

import sys
from typing import IO, Any, Callable, Optional

from twisted.application import service
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    eventAsJSON,
    formatEvent,
)
from twisted.python import logfile

FORMATS = ("text", "json")


def _json_line(event: LogEvent) -> Optional[str]:
    event = dict(event)
    event["text"] = formatEvent(event)
    level = event.get("log_level")
    if level is not None:
        event["level"] = getattr(level, "name", str(level))
    return eventAsJSON(event) + "\n"


def json_file_observer(out: IO[Any]) -> FileLogObserver:
    """Writes each event to ``out`` as one line of JSON."""
    return FileLogObserver(out, _json_line)


def json_observer() -> FileLogObserver:
    """For ``twistd --logger=pipeserver.logs.json_observer``: JSON on stdout."""
    return json_file_observer(sys.stdout)


def twistd_log_file(twistd_options: Any) -> IO[Any]:
    """Where twistd would write its text log, for these twistd options."""
    name = twistd_options.get("logfile") if twistd_options is not None else None
    nodaemon = twistd_options.get("nodaemon", True) if twistd_options is not None else True
    if name == "-" or (not name and nodaemon):
        return sys.stdout
    return logfile.LogFile.fromFullPath(name or "twistd.log")


class LoggingService(service.MultiService):
    """The service tree's root: when it joins a twistd application it hands
    that application a log observer, which twistd then logs to."""

    #: Builds the observer, or None to keep twistd's default.
    observerFactory: Optional[Callable[[], Any]] = None

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if self.observerFactory is None:
            return
        setComponent = getattr(parent, "setComponent", None)
        if setComponent is not None and parent.getComponent(ILogObserver, None) is None:
            setComponent(ILogObserver, self.observerFactory())
