# The two commands: `make run` (demo: kubesim + Daphne) and `make test` (the whole suite).
# Everything else here is what they need, each step redone only when its inputs change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
KUBESIM_PORT ?= 6443
VENDOR := terminals/static/terminals/vendor/.built

.PHONY: run scale-demo test install vendor lint typecheck dist bench bench-full clean

run: install vendor
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py migrate --no-input
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py demo_admin
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} PORT=$(PORT) KUBESIM_PORT=$(KUBESIM_PORT) $(PY) scripts/run_demo.py

# Several Daphnes behind nginx (deploy/nginx/webshell.conf) with the PostgreSQL and Redis of this
# machine: SCALE_PROCESSES (2), SCALE_PORT (8080), SCALE_DATABASE_URL, SCALE_REDIS_URL (see
# scripts/scale_demo.py).
scale-demo: install vendor
	$(PY) -m scripts.scale_demo

test: install vendor
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; [ $$status -eq 5 ] && { echo "no tests ran"; exit 1; }; exit $$status

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

vendor: $(VENDOR)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(VENDOR): node_modules/.installed scripts/build-vendor.mjs
	npm run --silent build
	touch $@

lint: install
	$(PY) -m ruff check terminals kubesim tests webshell bench
	$(PY) -m ruff format --check terminals kubesim webshell

typecheck: install
	$(PY) -m mypy

dist: install vendor
	rm -rf dist
	$(PY) -m build --wheel --sdist --no-isolation --outdir dist .

bench: install vendor
	$(PY) -m bench $(BENCH_ARGS)

# Longer typing windows, more rounds: steadier figures in 10-15 minutes a database (bench takes 2.5-4).
bench-full: install vendor
	$(PY) -m bench --full $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules dist build terminals/static/terminals/vendor staticfiles .kubesim .scale-demo
