# Quick start: `make serve` serves on 127.0.0.1:8080; `make test` runs the tests.
# `make serve LISTEN=tcp:9000:interface=127.0.0.1` serves on another port
# (any `twistd pipe --listen` endpoint; tcp:9000 alone binds every interface).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LISTEN ?= tcp:8080:interface=127.0.0.1

.PHONY: install runtime serve test matrix bench cluster clean image wheels

# Everything for development: the server and the test extras.
install: $(VENV)/.installed-test

# The server alone (what `make serve` needs): no test extras. Editable: the
# checkout itself is on sys.path (setup.cfg's package_dir makes it a plain
# .pth), so twistd finds twisted/plugins/pipe_plugin.py and every edit is
# served without a reinstall.
runtime: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

serve: runtime
	$(BIN)/twistd --nodaemon --pidfile= pipe --listen $(LISTEN)

test: install
	$(BIN)/python -m pytest -q -ra

# The support matrix (noxfile.py): the core suite on each supported Python
# and Twisted, each in its own venv under .nox/ (kept between runs). nox and
# uv live in a venv of their own. `make matrix NOXARGS="-s full"`, `-l`...
NOX_VENV ?= .venv-nox
NOXARGS ?=
matrix: $(NOX_VENV)/.installed
	$(NOX_VENV)/bin/nox $(NOXARGS)

$(NOX_VENV)/.installed:
	$(PYTHON) -m venv $(NOX_VENV)
	$(NOX_VENV)/bin/pip install -q 'nox >= 2025.5.1' 'uv >= 0.6'
	touch $@

# N instances behind HAProxy (Debian's haproxy) on CLUSTER_PORT, in the
# foreground; Ctrl-C stops them all. See docs/scaling.md.
N ?= 3
CLUSTER_PORT ?= 8080
cluster: runtime
	$(BIN)/python deploy/cluster.py -n $(N) --port $(CLUSTER_PORT)

# bench/run.py, then bench/broker.py's rows (issue 20) against Redis, whose
# client (the `bench` extra) is installed here, not with the tests.
bench: install $(VENV)/.bench-installed
	$(BIN)/python bench/run.py

$(VENV)/.bench-installed: setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
	touch $@

# The container image (Containerfile): localhost/pipeserver:VERSION and :latest,
# built with podman (or docker where that is what is installed) from a
# wheelhouse made here, so the build itself needs no package index.
# BASE: the image to build on; IMAGE_PYTHON: its Python, which the wheels
# (cryptography, cffi, zope.interface) must match.
BASE ?= docker.io/library/python:3.11-slim
IMAGE ?= localhost/pipeserver
IMAGE_PYTHON ?= 3.11
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
ENGINE_FLAGS ?=
WHEELS := build/wheels
ARCH := $(shell uname -m)
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' pipeserver/__init__.py)

wheels: runtime
	rm -rf $(WHEELS)
	$(BIN)/pip wheel -q --no-deps -w $(WHEELS) .
	$(BIN)/pip download -q -d $(WHEELS) --only-binary=:all: \
	  --python-version $(IMAGE_PYTHON) --implementation cp \
	  --platform manylinux2014_$(ARCH) --platform manylinux_2_28_$(ARCH) \
	  --platform manylinux_2_34_$(ARCH) $(WHEELS)/pipeserver-*.whl

# podman keeps HEALTHCHECK only in the docker format.
image: wheels
	$(ENGINE) $(ENGINE_FLAGS) build $(if $(filter podman,$(notdir $(ENGINE))),--format docker) \
	  --build-arg BASE=$(BASE) -f Containerfile \
	  -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

clean:
	rm -rf $(VENV) $(NOX_VENV) .nox build *.egg-info twisted/plugins/dropin.cache
