# collab: `make run` serves on http://127.0.0.1:8888 with data in ./data;
# `make test` runs every test. Both set everything up on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STATIC := collab/static
HOST ?= 127.0.0.1
PORT ?= 8888
DATA_DIR ?= ./data

.PHONY: install install-test web run cluster test bench kill-loop soak storm lint types clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(PY) setup.cfg pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PIP) install --quiet -e '.[test,bench]'
	touch $@

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund

$(STATIC)/.built: web/node_modules/.package-lock.json $(wildcard web/src/* web/*.html web/*.css web/build.mjs)
	cd web && npm run --silent build
	touch $@

tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund

install: $(VENV)/.installed $(STATIC)/.built

web: $(STATIC)/.built

install-test: install $(VENV)/.installed-test tests/js/node_modules/.package-lock.json

run: install
	$(PY) -m collab serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# Cluster mode on one machine: a redis-server configured as collab requires
# (AOF always, noeviction; data in $(DATA_DIR)/redis) and two workers on $(PORT).
REDIS_PORT ?= 6390
cluster: install
	@command -v redis-server >/dev/null || { echo "make cluster needs redis-server (apt-get install redis-server)"; exit 1; }
	mkdir -p $(DATA_DIR)/redis
	redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --dir $(abspath $(DATA_DIR))/redis \
	  --appendonly yes --appendfsync always --save '' --maxmemory-policy noeviction \
	  --daemonize yes --pidfile $(abspath $(DATA_DIR))/redis/redis.pid --logfile redis.log
	trap 'kill $$(cat $(abspath $(DATA_DIR))/redis/redis.pid 2>/dev/null) 2>/dev/null' EXIT INT TERM; \
	  $(PY) -m collab serve --host $(HOST) --port $(PORT) --redis-url redis://127.0.0.1:$(REDIS_PORT)/0 --workers 2

test: install-test
	$(VENV)/bin/mypy --strict collab
	$(PY) -m pytest $(PYTEST_ARGS)

tests/bench/node_modules/.package-lock.json: tests/bench/package.json tests/bench/package-lock.json
	cd tests/bench && npm ci --no-audit --no-fund

# BENCH_ARGS: --quick (short run), --json PATH, --scenarios fanout,..., --peers collab,...
# CLUSTER_BENCH_ARGS: --quick, --json PATH, --setups single,cluster,cluster-everysec
bench: install-test $(VENV)/.installed-bench tests/bench/node_modules/.package-lock.json
	$(PY) tests/bench/run.py $(BENCH_ARGS)
	$(PY) tests/bench/cluster.py $(CLUSTER_BENCH_ARGS)
	$(PY) tests/bench/bigload.py $(BIGLOAD_ARGS)
	$(PY) tests/bench/gil_probe.py

# Cluster kill loop: SIGKILL collab processes (KILLS) and redis-server (REDIS_KILLS)
# under a stream of unique tokens; fails if any token is lost or doubled.
KILLS ?= 20
REDIS_KILLS ?= 5
kill-loop: install-test
	$(PY) tests/bench/kill_loop.py --kills $(KILLS) --redis-kills $(REDIS_KILLS)

# Soak (not part of make test): SOAK_ARGS, e.g. "--conns 2000 --docs 200 --duration 1800
# --warmup 300"; `python tests/bench/soak.py --help` lists every knob and tolerance.
SOAK_ARGS ?= --conns 2000 --docs 200 --duration 1800 --warmup 300
soak: install-test
	$(PY) tests/bench/soak.py $(SOAK_ARGS)

# Reconnect storm: 2,000 stock y-websocket clients over 200 documents, the server restarted by
# SIGTERM and by SIGKILL; collab and the Yjs reference server side by side. STORM_ARGS: --conns,
# --docs, --peers collab,yjs-ref, --kinds term,kill
storm: install-test $(VENV)/.installed-bench tests/bench/node_modules/.package-lock.json
	$(PY) tests/bench/storm.py $(STORM_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check collab tests

types: $(VENV)/.installed-test
	$(VENV)/bin/mypy --strict collab

clean:
	rm -rf $(VENV) web/node_modules tests/js/node_modules $(STATIC) build *.egg-info
