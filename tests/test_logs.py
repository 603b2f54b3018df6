# mypy: disable-error-code="arg-type,return"
"""The text observer writes exactly what twistd's own would
(``formatEventAsClassicLogText`` with RFC 3339 times), event by event."""

from __future__ import annotations

import io
import time

import pytest
from twisted.logger import LogLevel, formatEventAsClassicLogText, formatTime, timeFormatRFC3339
from twisted.python.failure import Failure

from pipeserver.http.logs import text_file_observer


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
def test_line_is_twisteds(event) -> None:
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


# ---------------------------------------------------------------- access lines of a real server

import json  # noqa: E402
import re  # noqa: E402
from typing import Any, Dict, List, cast  # noqa: E402

import pytest_twisted  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402

import helpers  # noqa: E402
from helpers import curl  # noqa: E402
from pipeserver.http.logs import json_file_observer  # noqa: E402


class Captured:
    """Every event while installed, and the same events as JSON lines."""

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []
        self.out = io.StringIO()
        self.json = json_file_observer(self.out)

    def __call__(self, event: Dict[str, Any]) -> None:
        self.events.append(event)
        self.json(event)

    def access(self, path: str) -> List[str]:
        """The access lines' texts for ``path`` (any query), as logged."""
        from twisted.logger import formatEvent

        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_namespace") == "pipeserver.access" and e["path"] == path
        ]

    def objects(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


@pytest.fixture
def captured():
    log = Captured()
    globalLogPublisher.addObserver(log)
    yield log
    globalLogPublisher.removeObserver(log)


def _shape(text: str) -> str:
    """An access line without its timing: ``METHOD PATH STATUS RESULT in= out=``."""
    return re.sub(r" [0-9.]+s project=", " project=", text)


@pytest_twisted.inlineCallbacks
def test_each_failed_request_says_why(make_server, procs, captured, tmp_path):
    server = make_server("--wait-timeout", "1")
    body = tmp_path / "body"
    helpers.make_file(str(body), 100_000, seed=5)

    # ok: a whole transfer.
    receiver = procs.spawn(curl("-f", server.url("/ok")), keep=False)
    yield server.wait_receivers("/ok", 1)
    sender = procs.spawn(curl("-f", "-T", str(body), server.url("/ok")))
    yield sender.wait()
    yield receiver.wait()

    # refused: after "100 Continue" (n differs from the waiting receiver's),
    # and before it (a bad n), both with curl -T's Expect: 100-continue.
    waiting = procs.spawn(curl(server.url("/refused?n=2")), keep=False)
    yield server.wait_receivers("/refused", 1)
    mismatch = procs.spawn(curl("-T", str(body), server.url("/refused")))
    bad_n = procs.spawn(curl("-T", str(body), server.url("/bad?n=x")))
    yield mismatch.wait()
    yield bad_n.wait()

    # timed_out: a receiver and a sender alone, past --wait-timeout.
    lonely_receiver = procs.spawn(curl(server.url("/late-r")))
    lonely_sender = procs.spawn(curl("-T", str(body), server.url("/late-s")))
    yield lonely_receiver.wait()
    yield lonely_sender.wait()
    yield waiting.wait()

    # left and cut: a sender killed mid-body; its receiver is cut.
    gate = str(tmp_path / "gate")
    cut_receiver = procs.spawn(curl(server.url("/cut")), keep=False)
    yield server.wait_receivers("/cut", 1)
    producer, dying = procs.pipeline(helpers.gated(str(body), gate), curl("-T", "-", server.url("/cut")))
    yield helpers.has_received(cut_receiver, 100_000)
    dying.kill()
    yield cut_receiver.wait()
    producer.kill()
    yield server.wait_empty()
    paths = ("/ok", "/refused", "/bad", "/late-r", "/late-s", "/cut")
    yield helpers.wait_for(
        lambda: [len(captured.access(p)) for p in paths] == [2, 2, 1, 1, 1, 2],
        what="every access line",
    )

    mismatch_text = len(mismatch.out)
    bad_n_text = len(bad_n.out)
    assert sorted(_shape(t) for t in captured.access("/ok")) == [
        "GET /ok 200 ok in=0 out=100000 project=-",
        f"PUT /ok 200 ok in=100000 out={len(sender.out)} project=-",
    ]
    assert [_shape(t) for t in captured.access("/refused") if t.startswith("PUT")] == [
        f"PUT /refused 400 refused in=0 out={mismatch_text} project=-"
    ]
    assert [_shape(t) for t in captured.access("/bad")] == [
        f"PUT /bad 400 refused in=0 out={bad_n_text} project=-"
    ]
    assert [_shape(t) for t in captured.access("/late-r")] == [
        f"GET /late-r 504 timed_out in=0 out={len(lonely_receiver.out)} project=-"
    ]
    # (What it sent after its lines is read and dropped: in= varies.)
    assert re.fullmatch(
        rf"PUT /late-s 200 timed_out in=\d+ out={len(lonely_sender.out)} project=-",
        _shape(captured.access("/late-s")[0]),
    ), captured.access("/late-s")
    cut = sorted(_shape(t) for t in captured.access("/cut"))
    assert cut[0] == "GET /cut 200 cut in=0 out=100000 project=-", cut
    assert re.fullmatch(r"PUT /cut 200 left in=100000 out=\d+ project=-", cut[1]), cut

    # The same lines as JSON: compact, one type per field, an ISO time.
    lines = captured.out.getvalue().splitlines()
    assert all(", " not in line.split('"text"')[0] for line in lines)
    access = [o for o in captured.objects() if o["namespace"] == "pipeserver.access"]
    assert {o["result"] for o in access} == {"ok", "refused", "timed_out", "cut", "left"}
    for o in access:
        assert set(o) == {"time", "level", "namespace", "text", "method", "path", "status",
                          "result", "received", "sent", "duration", "project", "mode"}, o
        assert [type(o[k]) for k in ("method", "path", "result", "project", "time", "mode")] == [
            str
        ] * 6
        assert o["mode"] == "plain"
        assert [type(o[k]) for k in ("status", "received", "sent")] == [int] * 3
        assert type(o["duration"]) is float
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["time"]), o
        assert o["level"] == "info"


def test_json_line_of_a_plain_event_and_a_failure() -> None:
    out = io.StringIO()
    observer = json_file_observer(out)
    observer(dict(log_format="Capacity: {fds:,} fds", fds=19900, log_time=NOW,
                  log_namespace="pipeserver.ops.tap", log_level=LogLevel.info,
                  log_logger=object(), log_source=None))
    observer(dict(log_format="boom", log_failure=_failure(), log_time=NOW,
                  log_namespace="x", log_level=LogLevel.critical))
    first, second = out.getvalue().splitlines()
    assert first == (
        '{"time":"2026-11-18T11:06:40.750Z","level":"info","namespace":"pipeserver.ops.tap",'
        '"text":"Capacity: 19,900 fds"}'
    )
    failure = json.loads(second)
    assert failure["level"] == "critical" and failure["text"] == "boom"
    assert "ZeroDivisionError" in failure["traceback"]


# ---------------------------------------------------------------- access lines without an event

from twisted.logger import FileLogObserver, LogPublisher, Logger  # noqa: E402

from pipeserver.http import _twisted as internals, logs  # noqa: E402
from pipeserver.domain.interfaces import Outcome  # noqa: E402


class Record:
    """What an access line reads of a request (logs.AccessRecord)."""

    def __init__(self, method: Any, path: Any, code: int, written: int, **more: Any) -> None:
        self.method, self.path, self.code, self.startedWriting = method, path, code, written
        self.cutShort, self.endedBy = False, None
        self.bodyBytes, self.sentLength, self.startedAt, self.project = 1024, 0, 10.0, ""
        self.mode = "plain"
        vars(self).update(more)


RECORDS = [
    Record(b"PUT", "/a b/ü".encode(), 200, 1),
    Record(b"GET", b"/x", 200, 1, cutShort=True, sentLength=5, project="p"),
    Record(b"GET", b"/late", 200, 0, endedBy=Outcome.TIMED_OUT),
    Record(b"POST", b"/r", 404, 1, startedAt=9.9995004),
    Record(None, None, 400, 0),
    Record(b"GET", b"/\xff\xfe", 200, 1, endedBy=Outcome.ABORTED),
    Record(b"GET", b"/l", 200, 1, mode="live"),
]
TEXTS = [
    "PUT /a b/ü 200 ok in=1024 out=0 0.250s project=-",
    "GET /x 200 left in=1024 out=5 0.250s project=p",
    "GET /late 0 timed_out in=1024 out=0 0.250s project=-",
    "POST /r 404 refused in=1024 out=0 0.251s project=-",
    "- - 400 refused in=1024 out=0 0.250s project=-",
    "GET /\ufffd\ufffd 200 cut in=1024 out=0 0.250s project=-",
    "GET /l 200 ok in=1024 out=0 0.250s mode=live project=-",
]


class Counting(logs.TextFileObserver):
    """Our text observer, counting the events it is given."""

    events = 0

    def __call__(self, event: Any) -> None:
        self.events += 1
        super().__call__(event)


def _lines(monkeypatch: pytest.MonkeyPatch, *observers: Any) -> None:
    monkeypatch.setattr(logs, "_access", Logger(namespace="pipeserver.access",
                                                observer=LogPublisher(*observers)))
    for record in RECORDS:
        logs.access_line(record, 10.25)


@pytest.mark.parametrize("make", [io.StringIO, io.BytesIO])
def test_access_lines_skip_the_event_when_ours_is_the_only_observer(
    monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    # Issue 20: under twistd our text observer is the only one, and the
    # line goes straight to it, the same text (a file of bytes: in UTF-8).
    assert internals.LOG_OBSERVERS_KNOWN
    for _ in range(3):  # should the second tick between the two
        alone, beside = Counting(make()), Counting(make())
        seen: List[Any] = []
        _lines(monkeypatch, alone)
        _lines(monkeypatch, beside, seen.append)
        if cast(Any, alone._out).getvalue() == cast(Any, beside._out).getvalue():
            break
    direct, evented = cast(Any, alone._out).getvalue(), cast(Any, beside._out).getvalue()
    if make is io.BytesIO:
        direct, evented = direct.decode("utf-8"), evented.decode("utf-8")
    assert direct == evented
    assert (alone.events, beside.events, len(seen)) == (0, len(RECORDS), len(RECORDS))
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"
    lines = direct.splitlines()
    assert [re.sub("^" + stamp + " ", "", line) for line in lines] == [
        "[pipeserver.access#info] " + text for text in TEXTS]
    assert all(re.match(stamp + " ", line) for line in lines)


def test_access_lines_are_events_for_any_other_observer(monkeypatch: pytest.MonkeyPatch) -> None:
    # Twisted's own FileLogObserver, or ours behind a publisher this code
    # cannot look into: the event, as before.
    out = io.StringIO()
    plain = FileLogObserver(out, logs._text_line)
    _lines(monkeypatch, plain)
    assert [line.split(" ", 1)[1] for line in out.getvalue().splitlines()] == [
        "[pipeserver.access#info] " + text for text in TEXTS]
    ours = Counting(io.StringIO())
    monkeypatch.setattr(internals, "LOG_OBSERVERS_KNOWN", False)
    _lines(monkeypatch, ours)
    assert ours.events == len(RECORDS)


def test_a_failing_write_goes_the_events_way(monkeypatch: pytest.MonkeyPatch) -> None:
    # The publisher deals with a broken observer, as it always did: the
    # line costs the server nothing but itself.
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    broken = Counting(Broken())
    _lines(monkeypatch, broken)
    assert broken.events == len(RECORDS)
