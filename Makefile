# Quick start: `make serve` serves on 127.0.0.1:8080; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LISTEN ?= tcp:8080:interface=127.0.0.1

.PHONY: install serve test bench cluster clean

install: $(VENV)/.installed

# "compat" editable mode puts the checkout on sys.path, so twistd finds
# twisted/plugins/pipe_plugin.py without a reinstall after each edit.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

serve: install
	$(BIN)/twistd --nodaemon --pidfile= pipe --listen $(LISTEN)

test: install
	$(BIN)/python -m pytest -q -ra

# N instances behind HAProxy (Debian's haproxy) on CLUSTER_PORT, in the
# foreground; Ctrl-C stops them all. See docs/scaling.md.
N ?= 3
CLUSTER_PORT ?= 8080
cluster: install
	$(BIN)/python deploy/cluster.py -n $(N) --port $(CLUSTER_PORT)

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info twisted/plugins/dropin.cache
