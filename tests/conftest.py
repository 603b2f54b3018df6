"""Fixtures of the integration tests (tests/test_integration_*.py).

``server`` is a real pipeserver listening on 127.0.0.1:0 in this process, on
the global reactor that pytest-twisted runs; ``make_server`` builds one with
other options. At teardown every server's registry must be empty (polled
briefly), and any process a test left running is killed.
"""

from __future__ import annotations

import os
import sys

import pytest
import pytest_twisted

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
    if problems:
        pytest.fail("; ".join(problems) + (f" (still running: {left})" if left else ""))


@pytest.fixture
def server(make_server):
    return make_server()
