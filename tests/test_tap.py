# mypy: disable-error-code="arg-type,attr-defined,has-type,misc,union-attr"
"""The ``twistd pipe`` command: its options, the service they build, the plugin."""

from __future__ import annotations

from typing import List

import pytest
from twisted.application.service import IService, IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage

import pipeserver
from pipeserver.ops import tap
from pipeserver.web.site import PipeSite
from pipeserver.domain.pipe import PipeRegistry


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


# ------------------------------------------------------------ Options
def test_defaults() -> None:
    options = parse()
    assert options["listen"] == ["tcp:8080"]
    assert options["wait-timeout"] == 300.0
    assert options["max-receivers"] == 256
    assert options["idle-timeout"] == 60.0
    assert options["tokens"] is None
    assert isinstance(options["wait-timeout"], float)
    assert isinstance(options["max-receivers"], int)


def test_values_are_converted() -> None:
    options = parse("--wait-timeout", "2.5", "--max-receivers", "7", "--idle-timeout", "9")
    assert (options["wait-timeout"], options["max-receivers"], options["idle-timeout"]) == (
        2.5, 7, 9.0)
    assert isinstance(options["max-receivers"], int)


def test_listen_is_repeatable_and_replaces_the_default() -> None:
    options = parse("--listen", "tcp:0:interface=127.0.0.1", "--listen", "unix:/tmp/p.sock",
                    "-l", "tcp6:9000")
    assert options["listen"] == ["tcp:0:interface=127.0.0.1", "unix:/tmp/p.sock", "tcp6:9000"]


def test_listen_default_not_shared_between_instances() -> None:
    first = parse("--listen", "tcp:1")
    second = parse()
    assert first["listen"] == ["tcp:1"]
    assert second["listen"] == ["tcp:8080"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--wait-timeout", "0"],
        ["--wait-timeout", "-5"],
        ["--wait-timeout", "soon"],
        ["--wait-timeout", "nan"],
        ["--max-receivers", "0"],
        ["--max-receivers", "-1"],
        ["--max-receivers", "1.5"],
        ["--max-receivers", "many"],
        ["--idle-timeout", "0"],
        ["--idle-timeout", "x"],
        ["--no-such-option"],
        ["--listen"],
        ["extra-argument"],
    ],
)
def test_bad_values_rejected(argv: List[str]) -> None:
    with pytest.raises(usage.UsageError):
        parse(*argv)


def test_missing_tokens_file_rejected(tmp_path) -> None:
    with pytest.raises(usage.UsageError):
        parse("--tokens", str(tmp_path / "absent"))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse("--version")
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"pipeserver {pipeserver.__version__}\n"


def test_help_mentions_the_options() -> None:
    text = str(tap.Options())
    for name in ("--listen", "--wait-timeout", "--max-receivers", "--idle-timeout"):
        assert name in text


# ------------------------------------------------------------ makeSite
def test_makeSite_uses_the_options_and_the_clock() -> None:
    clock = MemoryReactorClock()
    site = tap.makeSite(parse("--wait-timeout", "12", "--max-receivers", "3",
                              "--idle-timeout", "7"), clock)
    assert isinstance(site, PipeSite)
    registry = site.registry
    assert isinstance(registry, PipeRegistry)
    assert registry.wait_timeout == 12.0
    assert registry.max_receivers == 3
    assert registry.clock is clock
    assert site.timeOut == 7.0
    assert site.reactor is clock
    assert site.displayTracebacks is False


# ------------------------------------------------------------ makeService
def started(*argv: str):
    reactor = MemoryReactorClock()
    service = tap.makeService(parse(*argv), reactor)
    assert IService.providedBy(service)
    service.startService()
    return reactor, service


def test_starting_freezes_what_lives_for_the_whole_process() -> None:
    import gc

    gc.unfreeze()
    try:
        reactor, service = started()
        # The garbage collector's full passes skip everything built before start.
        assert gc.get_freeze_count() > 10_000
        service.stopService()
    finally:
        gc.unfreeze()


def test_makeService_listens_on_the_default() -> None:
    reactor, service = started()
    assert [(port, factory) for port, factory, _, _ in reactor.tcpServers] == [
        (8080, service.site)]
    assert reactor.tcpServers[0][3] == ""  # all interfaces
    assert reactor.unixServers == []
    service.stopService()


def test_makeService_one_port_per_listen() -> None:
    reactor, service = started(
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", "tcp:8081",
        "--listen", "unix:/tmp/pipeserver-test.sock",
    )
    tcp = [(port, interface) for port, _, _, interface in reactor.tcpServers]
    assert tcp == [(0, "127.0.0.1"), (8081, "")]
    assert [address for address, *_ in reactor.unixServers] == ["/tmp/pipeserver-test.sock"]
    # All of them serve the one site, with its one registry.
    factories = {entry[1] for entry in reactor.tcpServers} | {
        entry[1] for entry in reactor.unixServers}
    assert factories == {service.site}
    service.stopService()


def test_makeService_does_not_listen_before_start() -> None:
    reactor = MemoryReactorClock()
    tap.makeService(parse("--listen", "tcp:8082"), reactor)
    assert reactor.tcpServers == []


def test_makeService_site_runs_on_the_given_reactor() -> None:
    reactor, service = started("--wait-timeout", "5")
    assert service.site.reactor is reactor
    assert service.site.registry.clock is reactor
    service.stopService()


def test_stopping_with_nothing_open_is_immediate() -> None:
    reactor, service = started()
    fired: List[object] = []
    service.stopService().addBoth(fired.append)
    # The pipe service (nothing to drain) and the listener, both stopped now.
    assert fired == [[(True, None), (True, None)]]
    assert not service.running
    assert reactor.getDelayedCalls() == []


# ------------------------------------------------------------ the plugin
def test_plugin_is_discoverable() -> None:
    makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "pipe"]
    assert len(makers) == 1
    maker = makers[0]
    assert maker.options is tap.Options
    assert maker.description
    options = maker.options()
    options.parseOptions(["--listen", "tcp:0"])
    assert options["listen"] == ["tcp:0"]


def test_plugin_makeService_is_tap_makeService() -> None:
    (maker,) = [m for m in getPlugins(IServiceMaker) if m.tapname == "pipe"]
    assert maker.makeService is tap.makeService


# ------------------------------------------------------------ metrics, log format
def test_metrics_listen_serves_a_second_site() -> None:
    reactor, service = started("--listen", "tcp:8080", "--metrics-listen", "tcp:9100")
    ports = {port: factory for port, factory, _, _ in reactor.tcpServers}
    assert sorted(ports) == [8080, 9100]
    assert ports[8080] is service.site
    assert ports[9100] is service.metricsSite
    assert service.site.registry.observer.next is service.site.metrics
    service.stopService()


def test_log_format_option() -> None:
    assert parse()["log-format"] == "text"
    assert parse("--log-format", "json")["log-format"] == "json"
    with pytest.raises(usage.UsageError):
        parse("--log-format", "xml")
    text = str(tap.Options())
    assert "--metrics-listen" in text and "--log-format" in text


def test_log_format_json_gives_the_application_a_json_observer(monkeypatch) -> None:
    import io
    import json
    import sys

    from twisted.application.service import Application
    from twisted.logger import ILogObserver, formatEventAsClassicLogText
    from twisted.scripts.twistd import ServerOptions

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)  # twistd -n logs to stdout
    application = Application("pipe")
    tap.makeService(parse("--log-format", "json"), MemoryReactorClock()).setServiceParent(
        application)
    observer = application.getComponent(ILogObserver, None)
    assert observer is not None
    observer({"log_format": "hello {who}", "who": "you", "log_time": 0.0})
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line)["text"] == "hello you"

    out.truncate(0)
    out.seek(0)
    # Built by a .tac file, without twistd's options: twistd's own observer.
    plain = Application("pipe")
    tap.makeService(parse(), MemoryReactorClock()).setServiceParent(plain)
    assert plain.getComponent(ILogObserver, None) is None
    # From `twistd -n pipe`: pipeserver's text observer, on stdout.
    twistd = ServerOptions()
    twistd.parseOptions(["--nodaemon", "pipe"])
    plain = Application("pipe")
    tap.makeService(twistd.subOptions, MemoryReactorClock()).setServiceParent(plain)
    text = plain.getComponent(ILogObserver, None)
    assert text is not None
    text({"log_format": "hello {who}", "who": "you", "log_time": 0.0, "log_system": "s"})
    assert out.getvalue() == formatEventAsClassicLogText(
        {"log_format": "hello {who}", "who": "you", "log_time": 0.0, "log_system": "s"})


def test_broken_tokens_file_rejected_naming_the_line(tmp_path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# ok\nalpha not-a-hash\n")
    with pytest.raises(usage.UsageError, match=r"line 2: expected 'PROJECT SHA256_HEX'"):
        parse("--tokens", str(path))


def test_syslog_keeps_twistds_own_observer() -> None:
    from twisted.application.service import Application
    from twisted.logger import ILogObserver
    from twisted.scripts.twistd import ServerOptions

    twistd = ServerOptions()
    twistd.parseOptions(["--syslog", "pipe"])
    application = Application("pipe")
    tap.makeService(twistd.subOptions, MemoryReactorClock()).setServiceParent(application)
    assert application.getComponent(ILogObserver, None) is None


# ------------------------------------------------------------ limits and capacity
def test_default_limits_follow_the_file_descriptors() -> None:
    limits = tap.makeSite(parse(), MemoryReactorClock(), fds=20_000).registry.limits
    # 19,900 descriptors for clients: half may wait, one client 1/16 of that.
    assert (limits.max_waiting, limits.max_parties_per_client) == (9_950, 621)
    # Without tokens everybody is one project: no per-project cap.
    assert limits.max_waiting_per_project is None
    assert limits.stall_timeout == 60.0
    # Connections: a party's each, and as many again.
    assert limits.max_connections_per_client == 1_242
    assert limits.max_queued_per_client == 16 * 1024 * 1024
    small_site = tap.makeSite(parse(), MemoryReactorClock(), fds=1024)
    small = small_site.registry.limits
    assert (small.max_waiting, small.max_parties_per_client) == (462, 28)
    assert small.max_connections_per_client == 56
    # The site's connections are capped and budgeted by them.
    assert (small_site.channels.maxPerClient, small_site.channels.maxQueuedPerClient) == (
        56, 16 * 1024 * 1024)


def test_explicit_limits_override_the_derived_ones(tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    derived = tap.makeSite(parse("--tokens", str(tokens)), MemoryReactorClock(), fds=20_000)
    assert derived.registry.limits.max_waiting_per_project == 2_487
    limits = tap.makeSite(
        parse("--tokens", str(tokens), "--max-waiting", "300", "--max-waiting-per-project",
              "70", "--max-waiting-per-client", "9", "--stall-timeout", "0"),
        MemoryReactorClock(), fds=20_000,
    ).registry.limits
    assert (limits.max_waiting, limits.max_waiting_per_project,
            limits.max_parties_per_client, limits.stall_timeout) == (300, 70, 9, 0.0)
    # The connection cap follows the party cap given...
    assert limits.max_connections_per_client == 18
    # ...unless it is given too.
    site = tap.makeSite(
        parse("--max-connections-per-client", "5", "--max-queued-per-client", "65536"),
        MemoryReactorClock(), fds=20_000,
    )
    assert (site.registry.limits.max_connections_per_client,
            site.registry.limits.max_queued_per_client) == (5, 65536)
    assert (site.channels.maxPerClient, site.channels.maxQueuedPerClient) == (5, 65536)


@pytest.mark.parametrize(
    "argv",
    [["--max-waiting-per-client", "0"], ["--max-connections-per-client", "0"],
     ["--max-queued-per-client", "-1"], ["--stall-timeout", "-1"], ["--stall-timeout", "x"],
     ["--stall-timeout", "inf"], ["--trusted-proxy", "10.0.0.0/33"], ["--trusted-proxy", "proxy"]],
)
def test_bad_limit_values_rejected(argv: List[str]) -> None:
    with pytest.raises(usage.UsageError):
        parse(*argv)


def test_trusted_proxy_is_repeatable() -> None:
    options = parse("--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "2001:db8::/32",
                    "--trusted-proxy", "192.0.2.7", "--trusted-proxy", "unix")
    assert [str(net) for net in options["trusted-proxy"]] == [
        "10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32", "unix"]


def test_makeService_raises_the_soft_fd_limit_and_logs_the_capacity(monkeypatch) -> None:
    import resource

    from twisted.logger import formatEvent, globalLogPublisher

    limits = {"now": (1024, 20_000)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])

    def setrlimit(which, value):
        assert which == resource.RLIMIT_NOFILE
        limits["now"] = value

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    reactor = MemoryReactorClock()
    service = tap.makeService(parse(), reactor)
    # Raised when the service is made (twistd starting), not at import.
    assert limits["now"] == (20_000, 20_000)
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.startService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [formatEvent(event) for event in events]
    assert ("Capacity: 19,900 file descriptors; up to 9,950 waiting parties, 621 per client; "
            "1,242 connections per client") in texts
    service.stopService()


def test_help_names_the_limit_options() -> None:
    text = " ".join(str(tap.Options()).split())
    for name in ("--max-waiting-per-client", "--trusted-proxy", "--stall-timeout",
                 "half the file descriptors", "--max-connections-per-client",
                 "twice the parties a client may hold", "--max-queued-per-client"):
        assert name in text


# ------------------------------------------------------------ the first minute
def _start_logged(*argv: str) -> List[str]:
    from twisted.logger import formatEvent, globalLogPublisher

    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        reactor, service = started(*argv)
        service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(event) for event in events]


def test_start_logs_the_settings_in_force() -> None:
    texts = _start_logged("--listen", "tcp:0:interface=127.0.0.1", "--wait-timeout", "2.5",
                          "--max-waiting", "40")
    (line,) = [t for t in texts if t.startswith("Settings: ")]
    assert line == (
        "Settings: listen=tcp:0:interface=127.0.0.1 metrics-listen=- trusted-proxy=- no-h2=no "
        "wait-timeout=2.5 max-receivers=256 tokens=- max-waiting=40 max-waiting-per-project=- "
        "max-waiting-per-client=8 max-connections-per-client=16 max-queued-per-client=16777216 "
        "stall-timeout=60 idle-timeout=60 header-timeout=20 max-headers=100 "
        "max-header-bytes=16384 max-path-bytes=1024 h2-window=262144 h2-max-streams=100 "
        "shutdown-grace=30 log-format=text"
    )
    # Every option is in it.
    for name, *_ in tap.Options.optParameters:
        assert f" {name}=" in line


def test_an_open_server_on_every_interface_is_warned_about(tmp_path) -> None:
    texts = _start_logged("--listen", "tcp:8080", "--listen", "tcp6:8081:interface=\\:\\:",
                          "--listen", "tcp:8082:interface=127.0.0.1", "--listen", "unix:/tmp/x.sock")
    warnings = [t for t in texts if "every interface" in t]
    assert warnings == [
        "--listen tcp:8080 takes connections on every interface, and the server is open "
        "(no --tokens): anyone who reaches this host can use its pipes. To serve this host "
        "only: --listen tcp:8080:interface=127.0.0.1",
        "--listen tcp6:8081:interface=\\:\\: takes connections on every interface, and the "
        "server is open (no --tokens): anyone who reaches this host can use its pipes. To "
        "serve this host only: --listen tcp6:8081:interface=\\:\\:1",
    ]
    tokens = tmp_path / "tokens"
    tokens.write_text("# none yet\n")
    assert not [t for t in _start_logged("--tokens", str(tokens)) if "every interface" in t]


@pytest.mark.parametrize(
    "endpoint, why",
    [
        ("tcp:notaport", "ValueError: invalid literal for int() with base 10: 'notaport'"),
        ("tpc:8080", "ValueError: Unknown endpoint type: 'tpc'"),
    ],
)
def test_a_bad_endpoint_is_one_line(endpoint: str, why: str) -> None:
    with pytest.raises(tap.StartError) as caught:
        tap.makeService(parse("--listen", endpoint), MemoryReactorClock())
    assert str(caught.value) == (
        f"twistd pipe: --listen {endpoint}: not an endpoint we can use ({why}). Examples: "
        "tcp:8080, tcp:8080:interface=127.0.0.1, unix:/run/pipe.sock, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem"
    )
