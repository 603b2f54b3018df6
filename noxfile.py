"""The support matrix: which Pythons and Twisted releases pipeserver is tested on.

    nox                  # the core suite on every (Python, Twisted) below,
                         # typecheck and imports (CI)
    nox -s full          # the whole suite once, as `make test` runs it
    nox -s typecheck     # mypy --strict (setup.cfg [mypy]) on the newest Twisted,
                         # over pipeserver/ and tests/
    nox -s imports       # lint-imports: the layers (setup.cfg [importlinter])
    nox -l               # the list of sessions

``core`` runs on every Python that setup.cfg claims, with the newest Twisted
and h2, and on the lowest Python with the lowest Twisted and h2, and a
middle Twisted. The core suite
is everything but the tests that drive Debian programs other than curl
(chromium, nginx, caddy, haproxy, podman): those run once, in the whole suite
(``make test``), which CI (.ci/run) also runs. tests/test_twisted_internals.py
checks that this file, setup.cfg's ``python_requires``, its classifiers and
its Twisted and h2 ranges agree.

A Python that is missing fails the run: nothing is skipped in silence.
Interpreters are looked up on PATH and under pyenv (``$PYENV_ROOT/versions``).
"""

from __future__ import annotations

import glob
import os

import nox

#: Every minor version from setup.cfg's python_requires up to the newest.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
#: The lowest is setup.cfg's lower bound; the newest is the newest release.
TWISTED_LOWEST = "25.5.0"
TWISTED_MIDDLE = "26.4.0"
TWISTED_NEWEST = "26.10.0"
#: setup.cfg's h2 range: its lower bound, and the newest release. The DATA
#: fast path runs only on the releases pipeserver/http2/_h2.py verified (the
#: newest); on the lowest, h2's own code (tests/test_h2_integration.py
#: moves bytes over h2c on whichever is installed).
H2_LOWEST = "4.1.0"
H2_NEWEST = "4.4.1"

#: Each needs a Debian program besides curl; they run in the whole suite.
NEEDS_DEBIAN_PROGRAMS = [
    "tests/test_browser.py",  # chromium (and playwright)
    "tests/test_browser_h2.py",  # chromium (and playwright)
    "tests/test_proxy_nginx.py",  # nginx
    "tests/test_proxy_caddy.py",  # caddy
    "tests/test_proxy_haproxy.py",  # haproxy
    "tests/test_cluster.py",  # haproxy
    "tests/test_container.py",  # podman, runc, mmdebstrap (builds an image)
]

CORE = [(python, TWISTED_NEWEST, H2_NEWEST) for python in PYTHONS] + [
    (PYTHONS[0], TWISTED_LOWEST, H2_LOWEST),
    (PYTHONS[0], TWISTED_MIDDLE, H2_NEWEST),
]

nox.options.sessions = ["core", "typecheck", "imports"]
nox.options.error_on_missing_interpreters = True
# uv builds a session's environment in seconds; plain venv + pip otherwise.
nox.options.default_venv_backend = "uv|venv"
# Each (Python, Twisted) pair has its own environment, so keeping it between
# runs is safe: the install step below still runs and puts the chosen Twisted
# and this checkout's pipeserver into it each time.
nox.options.reuse_venv = "yes"


def _find_pyenv_pythons() -> None:
    """Put pyenv's installed Pythons on PATH (its shims answer only for the
    versions selected in pyenv, and uv must not download one of its own)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin")))
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(found + [p for p in path if p not in found])
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    os.environ.setdefault("UV_PYTHON_PREFERENCE", "only-system")


_find_pyenv_pythons()


def _install(session: nox.Session, twisted: str, h2: str = H2_NEWEST) -> None:
    """This checkout (built and installed, not editable) with its test extras,
    and exactly this Twisted and this h2."""
    reinstall = (
        ["--reinstall-package", "pipeserver"]
        if session.venv_backend == "uv"
        else ["--force-reinstall", "--no-deps"]
    )
    if session.venv_backend == "uv":
        session.install(*reinstall, ".[test]", f"Twisted[tls]=={twisted}", f"h2=={h2}")
    else:
        session.install(".[test]", f"Twisted[tls]=={twisted}", f"h2=={h2}")
        session.install(*reinstall, ".")
    session.run(
        "python", "-c",
        "import sys, twisted, h2; print('Python', sys.version.split()[0], "
        "'/ Twisted', twisted.__version__, '/ h2', h2.__version__)",
    )


def _pytest(session: nox.Session, *args: str) -> None:
    # The ``pytest`` script, not ``python -m pytest``: the tests then import
    # the installed pipeserver, the one twistd runs, not the checkout's.
    session.run("pytest", "-q", "-ra", *args, *session.posargs)


@nox.session
@nox.parametrize(
    "python,twisted,h2",
    CORE,
    ids=[f"{python}-twisted{twisted}-h2{h2}" for python, twisted, h2 in CORE],
)
def core(session: nox.Session, twisted: str, h2: str) -> None:
    """The core suite: all but the tests that need chromium, nginx, caddy, haproxy or podman."""
    _install(session, twisted, h2)
    _pytest(session, *[f"--ignore={path}" for path in NEEDS_DEBIAN_PROGRAMS])


@nox.session(python=PYTHONS[-1])
def full(session: nox.Session) -> None:
    """The whole suite once, on the newest Python and Twisted (as `make test`)."""
    _install(session, TWISTED_NEWEST)
    _pytest(session)


@nox.session(python=PYTHONS[-1])
def typecheck(session: nox.Session) -> None:
    """``mypy --strict`` with mypy-zope (setup.cfg ``[mypy]``), against the
    newest Twisted, whose annotations are the most complete."""
    # The test extras too: the tests are type-checked against them.
    session.install(".[test,typecheck]", f"Twisted[tls]=={TWISTED_NEWEST}")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHONS[-1])
def imports(session: nox.Session) -> None:
    """``lint-imports``: no import from a lower layer to a higher one, the
    domain free of adapters (setup.cfg ``[importlinter]`` contracts)."""
    session.install(".[imports]")
    session.run("lint-imports", "--config", "setup.cfg")
