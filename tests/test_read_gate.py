"""One owner decides whether a sender's connection reads (pipeserver/http/gate.py):
HTTPChannel and the pipe each hold its ReadGate for their own reason, and
neither can undo the other's hold."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from pipeserver.http.gate import CHANNEL, PIPE, ReadGate
from unit_support import Env, chunk, env, make_site, request  # noqa: F401  (fixtures)


def test_the_transport_reads_iff_no_hold_is_held() -> None:
    transport = StringTransport()
    gate = ReadGate(transport)
    gate.hold(PIPE)
    assert transport.producerState == "paused"
    gate.pauseProducing()  # HTTPChannel's hold
    gate.release(PIPE)
    assert transport.producerState == "paused" and gate.holds == {CHANNEL}
    gate.release(PIPE)  # not held: nothing happens
    gate.resumeProducing()
    assert transport.producerState == "producing" and gate.holds == set()
    gate.resumeProducing()  # a resume with no pause (HTTPChannel.requestDone)
    assert transport.producerState == "producing"


def test_drain_reads_on_whatever_is_held() -> None:
    transport = StringTransport()
    gate = ReadGate(transport)
    gate.hold(PIPE)
    gate.hold(CHANNEL)
    gate.drain()
    assert transport.producerState == "producing" and gate.holds == set()


def _streaming(env: Env):
    receiver = env.client().send(request(b"GET", b"/p"))
    sender = env.client().send(request(b"PUT", b"/p", chunked=True) + chunk(b"x"))
    assert sender.reading == "producing"
    return sender, receiver


def test_the_pipe_resuming_does_not_undo_the_channels_own_pause(env: Env) -> None:
    sender, receiver = _streaming(env)
    # The sender's own write buffer is full (its progress lines): the
    # channel stops reading it ...
    sender.pause()
    assert sender.reading == "paused"
    # ... and a receiver that pauses and resumes lets the pipe read again,
    # but not the channel.
    receiver.pause()
    receiver.resume()
    assert sender.reading == "paused"
    sender.resume()
    assert sender.reading == "producing"
    sender.send(chunk(b"y") + chunk(b""))
    assert receiver.response().body == b"xy"


def test_the_channel_resuming_does_not_undo_the_pipes_pause(env: Env) -> None:
    sender, receiver = _streaming(env)
    receiver.pause()  # a receiver cannot take more: the pipe holds the sender
    assert sender.reading == "paused"
    sender.pause()
    sender.resume()  # the sender's write buffer drained
    assert sender.reading == "paused"
    receiver.resume()
    assert sender.reading == "producing"
    sender.send(chunk(b""))
    assert receiver.response().body == b"x"


def test_a_finished_upload_leaves_its_connection_to_the_channel(env: Env) -> None:
    """The pipe lets go of a sender it is done with, even one it held when
    the body ended, so a keep-alive connection reads its next request."""
    sender, receiver = _streaming(env)
    receiver.pause()
    sender.send(chunk(b""))
    assert sender.proto.gate.holds == set() and sender.reading == "producing"
    receiver.resume()
    sender.send(request(b"GET", b"/version"))
    assert [r.status for r in sender.responses()] == [200, 200]
