# The two commands: `make run` (demo: kubesim + Daphne) and `make test` (the whole suite).
# Everything else here is what they need, each step redone only when its inputs change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
KUBESIM_PORT ?= 6443
VENDOR := terminals/static/terminals/vendor/.built

.PHONY: run scale-demo test install vendor lint typecheck dist bench bench-full clean messages

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

# Translations (needs GNU gettext): gather the marked strings into the Simplified Chinese
# catalogues (the app's in terminals/locale, for its templates, Python and scripts; the
# project's templates' in locale/), then compile them. Translate what is new in the .po files
# and run it again: the .mo files are committed, so that a site installing the wheel needs no
# gettext. tests/test_i18n.py checks that nothing is left out or stale.
LANGUAGES_MADE ?= zh_Hans
MESSAGES_ENV := DJANGO_SETTINGS_MODULE=tests.settings PYTHONPATH=$(CURDIR)
messages: install
	cd terminals && $(MESSAGES_ENV) ../$(PY) -m django makemessages $(addprefix -l ,$(LANGUAGES_MADE)) --no-obsolete --ignore='static/terminals/vendor/*'
	cd terminals && $(MESSAGES_ENV) ../$(PY) -m django makemessages -d djangojs $(addprefix -l ,$(LANGUAGES_MADE)) --no-obsolete --ignore='static/terminals/vendor/*'
	$(MESSAGES_ENV) $(PY) -m django makemessages $(addprefix -l ,$(LANGUAGES_MADE)) --no-obsolete \
		$(addprefix --ignore=,terminals node_modules kubesim tests bench scripts static staticfiles deploy docs test-artifacts dist build)
	$(MESSAGES_ENV) $(PY) -m django compilemessages --ignore=.venv --ignore=node_modules

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
