# The two commands of the README: `make demo` and `make test`. Both set everything up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
# The browser tests' Chromium: Debian's headless shell (tests/conftest.py says why).
CHROMIUM ?= /usr/bin/chromium-headless-shell
CHROMIUM_PACKAGE ?= chromium-headless-shell
export LABELLOOP_TEST_CHROMIUM := $(CHROMIUM)

PG_TESTS ?= tests

.PHONY: demo test test-fast test-postgres install browser lint bench clean

# uv compiles the bytecode at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (as
# on this machine), a venv without it compiles every module again in every process.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the browser tests; only when missing and apt is usable.
browser:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's $(CHROMIUM_PACKAGE) for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CHROMIUM_PACKAGE) >/dev/null; \
	fi

# The whole suite on the embedded SQLite default and every test that touches the database on
# a throwaway PostgreSQL cluster that .ci/with-postgres installs, starts and removes: the two
# runs side by side (.ci/test-both), each over TEST_WORKERS pytest-xdist workers.
TEST_WORKERS ?= 2
export TEST_WORKERS PG_TESTS

test: install browser
	.ci/with-postgres .ci/test-both $(VENV)/bin/pytest

# The inner loop: SQLite only, the browser tests included.
test-fast: install browser
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-postgres: install browser
	.ci/with-postgres $(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PG_TESTS)

demo: install
	$(VENV)/bin/labelloop demo $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info python-lib/*.egg-info
