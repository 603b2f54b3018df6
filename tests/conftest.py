"""Fixtures of the integration tests (tests/test_integration_*.py).

``server`` is a real pipeserver listening on 127.0.0.1:0 in this process, on
the global reactor that pytest-twisted runs; ``make_server`` builds one with
other options. At teardown every server's registry must be empty (polled
briefly), and any process a test left running is killed.

After every test, as trial's dirty-reactor check does, ``clean_reactor``
fails the test if it left a delayed call, an open connection, a listening
port or a process pipe on the shared reactor (compared with a snapshot taken
before the test, so what the session itself keeps is not counted).
"""

from __future__ import annotations

import os
import sys
from typing import Any, List, Set

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

sys.path.insert(0, os.path.dirname(__file__))

import helpers  # noqa: E402


@pytest.fixture
def procs():
    spawned = helpers.Procs()
    yield spawned
    spawned.cleanup()


@pytest.fixture
def make_server(procs):
    servers = []

    def make(*args: str) -> helpers.Server:
        server = helpers.start_server(*args)
        servers.append(server)
        return server

    yield make

    problems = []
    for server in servers:
        try:
            pytest_twisted.blockon(server.wait_empty(timeout=5.0))
        except AssertionError:
            problems.append(
                f"registry not empty after the test: {sorted(server.registry.pipes)}"
            )
        else:
            if server.registry.partiesByClient:
                problems.append(
                    f"parties still counted: {server.registry.partiesByClient}"
                )
    left = procs.cleanup()
    for server in servers:
        # Whatever the test left, do not leak it into the next test.
        if server.registry.pipes:
            try:
                pytest_twisted.blockon(server.wait_empty(timeout=5.0))
            except AssertionError:
                pass
        pytest_twisted.blockon(server.port.stopListening())
        tokens = getattr(server.site, "tokens", None)
        if tokens is not None:
            tokens.stop()
    if problems:
        pytest.fail("; ".join(problems) + (f" (still running: {left})" if left else ""))


@pytest.fixture
def server(make_server):
    return make_server()


# ---------------------------------------------------------------- a clean reactor

#: How long teardown waits for what a test started to end by itself: the
#: server's own timers (a cut connection's abort, the close of a pipe's
#: parties) and the peers' closes. It only stops a test that leaks.
CLEAN_TIMEOUT = 20.0

def _owner(call: Any) -> Any:
    """What a delayed call belongs to: a LoopingCall (its DelayedCall's func)
    or a bound method's object keeps its identity from one call to the next."""
    func = call.func
    return getattr(func, "__self__", func)


def _descriptors() -> Set[Any]:
    # The reactor's own wakers (the SIGCHLD one comes with the first
    # spawned process and stays for the session) are not the test's.
    return {
        fd
        for fd in set(reactor.getReaders()) | set(reactor.getWriters())
        if not type(fd).__name__.endswith("Waker")
    }


def _describe(call: Any) -> str:
    func = call.func
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{name} in {call.getTime() - reactor.seconds():.1f}s"


@pytest.fixture(autouse=True)
def clean_reactor(request):
    """Fail a test that leaves anything behind on the global reactor."""
    # The objects themselves are kept, so that no new one can take the id
    # of one gone meanwhile.
    before = list(reactor.getDelayedCalls())
    kept = before + [_owner(call) for call in before]
    calls = {id(call) for call in before}
    owners = {id(_owner(call)) for call in before}
    fds = _descriptors()
    yield
    assert kept is not None

    def new_calls() -> List[Any]:
        return [
            call
            for call in reactor.getDelayedCalls()
            if call.active()
            and id(call) not in calls
            and id(_owner(call)) not in owners
        ]

    def left() -> List[str]:
        found = []
        for call in new_calls():
            found.append(_describe(call))
        for fd in _descriptors() - fds:
            found.append(repr(fd))
        return found

    if not new_calls() and not (_descriptors() - fds):
        return

    @defer.inlineCallbacks
    def settle():
        deadline = reactor.seconds() + CLEAN_TIMEOUT
        while True:
            remaining = left()
            if not remaining or reactor.seconds() > deadline:
                return remaining
            yield task.deferLater(reactor, 0.02, lambda: None)

    remaining = pytest_twisted.blockon(settle())
    if remaining:
        # Clean up for the next test before failing this one.
        for call in new_calls():
            call.cancel()
        pytest.fail(
            f"the test left on the reactor after {CLEAN_TIMEOUT}s: " + "; ".join(remaining)
        )
