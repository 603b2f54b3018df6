"""The text observer writes exactly what twistd's own would
(``formatEventAsClassicLogText`` with RFC 3339 times), event by event."""

from __future__ import annotations

import io
import time

import pytest
from twisted.logger import LogLevel, formatEventAsClassicLogText, formatTime, timeFormatRFC3339
from twisted.python.failure import Failure

from pipeserver.logs import text_file_observer


def _twisted(event):
    return formatEventAsClassicLogText(
        event, formatTime=lambda when: formatTime(when, timeFormatRFC3339)
    )


def _failure() -> Failure:
    try:
        1 / 0
    except ZeroDivisionError:
        return Failure()


class Thing:
    name = "thing"

    def __repr__(self) -> str:
        return "<Thing>"

    def who(self) -> str:
        return "called"


NOW = 1795000000.75
ACCESS = "{method} {path} {status} in={received} out={sent} {duration:.3f}s project={project}"

EVENTS = [
    dict(log_format=ACCESS, method="PUT", path="/a b/ü", status=200, received=1024, sent=0,
         duration=0.01234, project="-", log_time=NOW, log_namespace="pipeserver.access",
         log_level=LogLevel.info),
    dict(log_format=ACCESS, method="GET", path="/x", status="aborted", received=0, sent=5,
         duration=0.0, project="p", log_time=NOW + 0.5, log_namespace="pipeserver.access",
         log_level=LogLevel.info),
    dict(log_format="hello", log_time=NOW, log_system="HTTPChannel,3,127.0.0.1"),
    dict(log_format="{x!r} and {x} and {x.name}", x=Thing(), log_time=NOW),
    dict(log_format="{x.who()}", x=Thing(), log_time=NOW),
    dict(log_format="{missing}", log_time=NOW, log_level=LogLevel.warn),
    dict(log_format="two\nlines", log_time=NOW, log_namespace="n"),
    dict(log_format="", log_time=NOW),
    dict(log_format=None, log_time=NOW),
    dict(log_time=NOW),
    dict(log_format="no time"),
    dict(log_format="boom", log_failure=_failure(), log_time=NOW, log_level=LogLevel.critical),
    dict(log_format="system {n}", n=3, log_system=42, log_time=NOW),
    dict(log_format="{{braces}} {n:>5}", n=7, log_time=time.time()),
    dict(log_format="negative", log_time=-1.5),
]


@pytest.mark.parametrize("event", EVENTS, ids=range(len(EVENTS)))
def test_line_is_twisteds(event) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    text_file_observer(out)(dict(event))
    assert out.getvalue() == (_twisted(dict(event)) or "")


def test_timestamp_follows_the_second() -> None:
    out = io.StringIO()
    observer = text_file_observer(out)
    for when in (NOW, NOW + 0.2, NOW + 1.0, NOW + 3600 * 24 * 200):
        observer(dict(log_format="tick", log_time=when))
    expected = "".join(_twisted(dict(log_format="tick", log_time=when)) for when in
                       (NOW, NOW + 0.2, NOW + 1.0, NOW + 3600 * 24 * 200))
    assert out.getvalue() == expected
    assert len(set(out.getvalue().splitlines())) == 3
