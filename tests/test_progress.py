"""``?progress`` spectators, driven by hand on a fake clock (SPEC §13).

A spectator is a ``GET /PATH?progress`` on a PipeChannel with a fake TCP
transport: what it is written is parsed as Server-Sent Events, and the
pipe's parties (also fake connections) must see exactly what they see
without it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.task import LoopingCall

from pipeserver.web import progress
from unit_support import (  # noqa: F401  (fixtures)
    Client,
    Env,
    chunk,
    env,
    make_site,
    request,
)

TICK = progress.INTERVAL
BODY = b"secret-body-bytes-" * 64

Event = Tuple[str, Dict[str, Any]]


def spectate(env: Env, path: bytes = b"/p", headers=()) -> Client:
    return env.client().send(request(b"GET", path + b"?progress", tuple(headers)))


def events(client: Client) -> List[Event]:
    """The events written to a spectator so far (the stream may go on)."""
    response = client.responses()[-1]
    assert response.status == 200, client.wire()
    assert response.header(b"content-type") == b"text/event-stream"
    blocks = response.body.decode("ascii").split("\n\n")
    assert blocks[0] == "retry: %d" % progress.RETRY_MS
    assert blocks[-1] == "", "an event cut in the middle"
    out: List[Event] = []
    for block in blocks[1:-1]:
        if block.startswith(":"):
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: "), block
        data = [line for line in lines if line.startswith("data: ")]
        assert len(data) == 1, block
        out.append((lines[0][len("event: "):], json.loads(data[0][len("data: "):])))
    return out


def ident(client: Client) -> Optional[str]:
    """The ``id:`` of the last event written to ``client``."""
    body = client.responses()[-1].body.decode("ascii")
    ids = [line[4:] for line in body.split("\n") if line.startswith("id: ")]
    return ids[-1] if ids else None


def sender(env: Env, path: bytes = b"/p", length: Optional[int] = None) -> Client:
    if length is None:
        return env.client().send(request(b"PUT", path, (), chunked=True))
    raw = request(b"PUT", path, ((b"Content-Length", b"%d" % length),))
    return env.client().send(raw)


def receiver(env: Env, path: bytes = b"/p") -> Client:
    return env.client().send(request(b"GET", path))


def waiting(n: Optional[int], sender: bool, receivers: int, path: str = "/p") -> Event:
    return ("waiting", {"state": "waiting", "path": path, "n": n, "sender": sender,
                        "receivers": receivers, "bytes": 0})


def timers(env: Env) -> int:
    """The spectators' timers pending on the clock."""
    calls = env.clock.getDelayedCalls()
    return len([call for call in calls if isinstance(getattr(call, "func", None), LoopingCall)])


def hub(env: Env) -> progress.Spectators:
    site: Any = env.site
    spectators: progress.Spectators = site.resource.spectators
    return spectators


def tick(env: Env, times: int = 1) -> None:
    for _ in range(times):
        env.clock.advance(TICK)


def stop(client: Client) -> None:
    if client.open:
        client.disconnect()
    client.flush()


# --------------------------------------------------------------- a transfer
def test_events_follow_a_transfer_and_end_with_it(env: Env) -> None:
    watcher = spectate(env)
    assert events(watcher) == [waiting(None, False, 0)]
    s = sender(env, length=2 * len(BODY))
    tick(env)
    assert events(watcher)[-1] == waiting(1, True, 0)
    r = receiver(env)
    tick(env)
    assert events(watcher)[-1] == ("streaming", {
        "state": "streaming", "path": "/p", "n": 1, "sender": True, "receivers": 1,
        "bytes": 0, "total": 2 * len(BODY), "seconds": TICK,
    })
    s.send(BODY)
    tick(env)
    name, data = events(watcher)[-1]
    assert (name, data["bytes"], data["seconds"]) == ("streaming", len(BODY), 2 * TICK)
    tick(env, 2)  # nothing moved: the count again, with the time (a stall shows)
    assert [(name, data["bytes"], data["seconds"]) for name, data in events(watcher)[-2:]] == [
        ("streaming", len(BODY), 3 * TICK), ("streaming", len(BODY), 4 * TICK)]
    s.send(BODY)
    env.clock.advance(0)
    assert events(watcher)[-1] == ("done", {
        "state": "done", "path": "/p", "n": 1, "sender": True, "receivers": 1,
        "bytes": 2 * len(BODY), "total": 2 * len(BODY), "seconds": 4 * TICK,
    })
    # The end ends the stream (a clean last chunk), carrying an id.
    assert watcher.responses()[-1].complete and ident(watcher) is not None
    # The parties saw what they see without a spectator.
    assert r.response().body == 2 * BODY and r.response().complete
    assert s.response().lines[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert BODY[:18] not in watcher.wire()
    stop(watcher)
    assert env.registry.partiesByClient == {}


def test_a_spectator_takes_no_receiver_place(env: Env) -> None:
    watchers = [spectate(env) for _ in range(3)]
    s = sender(env)
    assert env.registry.waiting() == 1
    r = receiver(env)
    # n=1: the one GET completed the pipe; three spectators did not count.
    pipe = env.registry.pipes[("", b"/p")]
    assert len(pipe.receivers) == 1
    s.send(chunk(BODY) + chunk(b""))
    assert r.response().body == BODY
    env.clock.advance(0)
    for watcher in watchers:
        assert events(watcher)[-1][0] == "done"
        stop(watcher)
    assert env.registry.pipes == {}
    assert env.registry.counts.get("completed") == 1


def test_a_quick_transfer_between_two_looks_is_still_shown_ending(env: Env) -> None:
    watcher = spectate(env)
    s = sender(env)
    r = receiver(env)
    s.send(chunk(BODY) + chunk(b""))
    env.clock.advance(0)  # no tick: the end comes from the registry's milestone
    assert events(watcher)[-1][0] == "done"
    assert events(watcher)[-1][1]["bytes"] == len(BODY)
    assert r.response().complete
    stop(watcher)


def test_a_receiver_that_leaves_is_an_aborted_transfer(env: Env) -> None:
    watcher = spectate(env)
    s = sender(env)
    r = receiver(env)
    s.send(chunk(BODY))
    r.disconnect()
    env.clock.advance(0)
    name, data = events(watcher)[-1]
    assert (name, data["state"], data["reason"], data["receivers"], data["bytes"]) == (
        "aborted", "aborted", "aborted", 0, len(BODY))
    stop(s)
    stop(watcher)
    env.clock.advance(30)


def test_a_deadline_is_shown_as_timed_out(make_site) -> None:
    env = make_site("--wait-timeout", "5")
    watcher = spectate(env)
    r = receiver(env)
    tick(env)
    assert events(watcher)[-1] == waiting(1, False, 1)
    env.clock.advance(5)
    name, data = events(watcher)[-1]
    assert (name, data["reason"], data["bytes"]) == ("aborted", "timed_out", 0)
    assert "seconds" not in data  # it never streamed
    stop(watcher)
    stop(r)


def test_a_party_that_leaves_a_waiting_pipe_is_no_end(env: Env) -> None:
    watcher = spectate(env)
    r = receiver(env)
    tick(env)
    r.disconnect()
    tick(env)
    assert [name for name, _ in events(watcher)] == ["waiting", "waiting", "waiting"]
    assert events(watcher)[-1] == waiting(None, False, 0)
    assert watcher.open and not watcher.responses()[-1].complete
    stop(watcher)


# --------------------------------------------------------------- latecomers
def test_a_latecomer_sees_the_end_for_a_while(env: Env) -> None:
    s = sender(env)
    receiver(env)
    s.send(chunk(BODY) + chunk(b""))
    env.clock.advance(progress.LINGER - 1)
    late = spectate(env)
    assert [name for name, _ in events(late)] == ["done"]
    assert timers(env) == 0  # let go at once: nothing left to look at
    assert events(late)[0][1]["bytes"] == len(BODY)
    assert late.responses()[-1].complete
    # One that was shown this end already (EventSource's Last-Event-ID)
    # waits for the next transfer instead.
    shown = ident(late)
    assert shown is not None
    again = spectate(env, headers=((b"Last-Event-ID", shown.encode()),))
    assert events(again) == [waiting(None, False, 0)]
    assert again.open
    assert timers(env) == 1  # (for the one still watching)
    env.clock.advance(1)
    later = spectate(env)
    assert events(later) == [waiting(None, False, 0)]
    s2 = sender(env)
    tick(env)
    assert events(again)[-1] == waiting(1, True, 0)
    for client in (again, later, s2):
        stop(client)


def test_a_new_transfer_is_shown_rather_than_the_last_end(env: Env) -> None:
    s = sender(env)
    receiver(env)
    s.send(chunk(b"x") + chunk(b""))
    s2 = sender(env)
    watcher = spectate(env)
    assert events(watcher) == [waiting(1, True, 0)]
    stop(s2)
    stop(watcher)


# --------------------------------------------------------------- never in the way
def test_a_full_spectator_is_written_nothing_and_holds_nothing_back(env: Env) -> None:
    watcher = spectate(env)
    s = sender(env)
    r = receiver(env)
    tick(env)
    watcher.pause()  # its connection takes no more
    written = len(watcher.wire())
    for _ in range(20):
        s.send(chunk(BODY))
        tick(env)
        assert s.reading == "producing"  # the sender is read on
    assert len(watcher.wire()) == written
    assert r.response().body == 20 * BODY
    watcher.resume()  # drained: the state now, once
    name, data = events(watcher)[-1]
    assert (name, data["bytes"]) == ("streaming", 20 * len(BODY))
    s.send(chunk(b""))
    env.clock.advance(0)
    assert events(watcher)[-1][0] == "done"
    stop(watcher)


def test_a_silent_stream_gets_a_keepalive_comment(env: Env) -> None:
    watcher = spectate(env)
    env.clock.advance(progress.KEEPALIVE - TICK)
    assert b": keep-alive" not in watcher.wire()
    env.clock.advance(TICK)
    assert watcher.responses()[-1].body.endswith(b": keep-alive\n\n")
    assert events(watcher) == [waiting(None, False, 0)]
    stop(watcher)


def test_the_timer_runs_only_while_somebody_watches(env: Env) -> None:
    looks = lambda: timers(env)  # noqa: E731
    assert looks() == 0
    watcher = spectate(env)
    assert looks() == 1
    watcher.disconnect()
    assert looks() == 0
    assert hub(env).total == 0


# --------------------------------------------------------------- bounds
def test_spectators_are_capped_per_client(make_site) -> None:
    env = make_site("--max-waiting-per-client", "2", "--max-connections-per-client", "20")
    watchers = [spectate(env, b"/a"), spectate(env, b"/b")]
    third = spectate(env, b"/c")
    response = third.response()
    assert (response.status, response.text) == (
        503, "[ERROR] Too many spectators from your address.\n")
    assert response.header(b"retry-after") == b"5"
    # Spectators are not parties: the client may still send and receive.
    s = sender(env)
    r = receiver(env)
    s.send(chunk(b"ok") + chunk(b""))
    assert r.response().body == b"ok"
    watchers[0].disconnect()
    fourth = spectate(env, b"/c")
    assert events(fourth) == [waiting(None, False, 0, "/c")]
    for client in (watchers[1], fourth):
        stop(client)


def test_spectators_are_capped_in_all(make_site) -> None:
    env = make_site("--max-waiting", "2")
    watchers = [spectate(env), spectate(env)]
    response = spectate(env).response()
    assert (response.status, response.text) == (
        503, "[ERROR] Too many spectators on this server.\n")
    for client in watchers:
        stop(client)


def test_head_takes_no_place(env: Env) -> None:
    client = env.client().send(request(b"HEAD", b"/p?progress"))
    response = client.responses(head=True)[-1]
    assert response.status == 200
    assert response.header(b"content-type") == b"text/event-stream"
    assert hub(env).total == 0


def test_a_shutdown_ends_the_spectators_of_nothing(env: Env) -> None:
    idle = spectate(env, b"/idle")
    watcher = spectate(env)
    r = receiver(env)
    env.registry.shutdown(1.0)
    env.clock.advance(0)
    assert events(watcher)[-1][1]["reason"] == "shut_down"
    tick(env)
    assert idle.responses()[-1].complete
    refused = spectate(env, b"/q").response()
    assert (refused.status, refused.text) == (503, "[ERROR] The server is shutting down.\n")
    for client in (idle, watcher, r):
        stop(client)


# --------------------------------------------------------------- the page
def test_a_browser_gets_the_page(env: Env) -> None:
    client = env.client().send(request(
        b"GET", b"/p?progress", ((b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),)))
    response = client.response()
    assert response.status == 200
    assert response.header(b"content-type") == b"text/html; charset=utf-8"
    assert response.body == progress.PAGE
    csp = response.header(b"content-security-policy")
    assert csp == progress.PAGE_CSP and b"script-src 'sha256-" in csp
    assert b"unsafe-inline'; connect" not in csp.split(b"script-src")[1][:40]
    assert hub(env).total == 0
    assert env.registry.pipes == {}


def test_metrics_still_hear_every_pipe(make_site) -> None:
    env = make_site("--metrics-listen", "tcp:0")
    watcher = spectate(env)
    s = sender(env)
    receiver(env)
    s.send(chunk(b"x") + chunk(b""))
    site: Any = env.site
    sample = site.metrics.prometheus.get_sample_value
    assert sample("pipeserver_pipes_established_total", {"project": ""}) == 1
    assert sample("pipeserver_pipes_closed_total", {"project": "", "outcome": "completed"}) == 1
    env.clock.advance(0)
    stop(watcher)
