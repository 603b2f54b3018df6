# mypy: disable-error-code="has-type,misc"
"""pipeserver.ops.environ: the PIPE_* variables the container image and
tap/pipe.tac are configured by."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeserver.ops import environ, tap


def parse(env):
    options = tap.Options()
    options.parseOptions(environ.option_args(env))
    return options


def test_every_option_has_its_variable(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# none yet\n")
    options = parse({
        "PIPE_LISTEN": "tcp:8080 unix:/tmp/p.sock",
        "PIPE_METRICS_LISTEN": "tcp:9100",
        "PIPE_WAIT_TIMEOUT": "60",
        "PIPE_MAX_RECEIVERS": "5",
        "PIPE_TOKENS": str(tokens),
        "PIPE_SHUTDOWN_GRACE": "7",
        "PIPE_LOG_FORMAT": "json",
        "PIPE_MAX_WAITING": "",  # empty: the default
        "PIPE_TRUSTED_PROXY": "10.0.0.0/8 unix",
        "HOME": "/root",
    })
    assert [str(network) for network in options["trusted-proxy"]] == ["10.0.0.0/8", "unix"]
    assert options["listen"] == ["tcp:8080", "unix:/tmp/p.sock"]
    assert options["metrics-listen"] == ["tcp:9100"]
    assert (options["wait-timeout"], options["max-receivers"]) == (60.0, 5)
    assert options["tokens"] == str(tokens)
    assert (options["shutdown-grace"], options["log-format"]) == (7.0, "json")
    assert options["max-waiting"] == tap.Options()["max-waiting"]
    # Every parameter of `twistd pipe` can be given.
    for name, *_ in tap.Options.optParameters:
        assert environ.variable(name) not in environ.unknown_variables(
            {environ.variable(name): "1"})


def test_defaults_and_typos():
    assert parse({})["listen"] == ["tcp:8080"]
    assert environ.unknown_variables({"PIPE_WAIT_TIMOUT": "5", "PIPE_LISTEN": "tcp:1",
                                      "PATH": "/bin"}) == ["PIPE_WAIT_TIMOUT"]


def test_health_url():
    assert environ.health_url({}) == "http://127.0.0.1:8080/api/v1/pipe/health"
    assert environ.health_url({"PIPE_LISTEN": "unix:/p.sock tcp:9000:interface=10.0.0.5"}
                              ) == "http://10.0.0.5:9000/api/v1/pipe/health"
    assert environ.health_url({"PIPE_LISTEN": "tcp6:port=80:interface=\\:\\:"}
                              ) == "http://[::1]:80/api/v1/pipe/health"
    assert environ.health_url({"PIPE_LISTEN": "tcp6:80:interface=\\:\\:1"}
                              ) == "http://[::1]:80/api/v1/pipe/health"
    assert environ.health_url({"PIPE_LISTEN": "ssl:8443:privateKey=k.pem"}
                              ) == "https://127.0.0.1:8443/api/v1/pipe/health"
    assert environ.health_url({"PIPE_LISTEN": "unix:/p.sock"}) is None


def test_tac_reads_the_variables(tmp_path):
    tac = os.path.join(os.path.dirname(__file__), os.pardir, "tap", "pipe.tac")
    script = (
        "from twisted.application.service import IServiceCollection;"
        "from twisted.python.util import sibpath;"
        "g = {}; exec(open(%r).read(), g);"
        "site = IServiceCollection(g['application']).services[0].site;"
        "print(site.registry.wait_timeout)" % tac
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, PIPE_WAIT_TIMEOUT="42"), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "42.0"


def _twistd_tac(env, timeout=30):
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    tac = os.path.join(os.path.dirname(__file__), os.pardir, "tap", "pipe.tac")
    return subprocess.run([twistd, "-ny", tac, "--pidfile="], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=timeout)


def test_tac_refuses_a_misspelled_variable_in_one_line():
    out = _twistd_tac({"PIPE_WAIT_TIMOUT": "5", "PIPE_LISTEN": "tcp:0:interface=127.0.0.1"})
    assert out.returncode == 1, out
    assert out.stderr == (
        "pipeserver: PIPE_WAIT_TIMOUT (did you mean PIPE_WAIT_TIMEOUT?): no option of "
        "`twistd pipe` has this variable; refusing to start without a setting you meant "
        "to give (PIPE_NAME is --NAME: twistd pipe --help lists them)\n"
    )


def test_tac_refuses_a_bad_value_naming_its_variable():
    out = _twistd_tac({"PIPE_WAIT_TIMEOUT": "soon", "PIPE_LISTEN": "tcp:0:interface=127.0.0.1"})
    assert out.returncode == 1, out
    assert out.stderr.startswith("pipeserver: PIPE_WAIT_TIMEOUT=soon: "), out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


def test_the_images_command_refuses_a_misspelled_variable():
    out = subprocess.run([sys.executable, "-m", "pipeserver.ops.environ"], capture_output=True,
                         text=True, env=dict(os.environ, PIPE_MAX_RECIEVERS="5"), timeout=30)
    assert out.returncode == 1, out
    assert out.stderr.startswith(
        "pipeserver: PIPE_MAX_RECIEVERS (did you mean PIPE_MAX_RECEIVERS?): "), out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
