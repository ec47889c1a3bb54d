# The two commands of the README: `make demo` and `make test`. Both set everything up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
CHROMIUM ?= /usr/bin/chromium

PG_TESTS ?= tests

.PHONY: demo test test-postgres install browser lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Debian chromium for the browser tests; only when missing and apt is usable.
browser:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# The whole suite on the embedded SQLite default, then every test that touches the database
# again on a throwaway PostgreSQL cluster that .ci/with-postgres installs, starts and removes.
test: install browser
	$(VENV)/bin/pytest -q
	.ci/with-postgres $(VENV)/bin/pytest -q -p no:cacheprovider $(PG_TESTS)

test-postgres: install browser
	.ci/with-postgres $(VENV)/bin/pytest -q -p no:cacheprovider $(PG_TESTS)

demo: install
	$(VENV)/bin/labelloop demo $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info python-lib/*.egg-info
