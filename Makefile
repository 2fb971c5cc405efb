# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv on first use. torch is pinned to the CPU build this machine carries;
# the package itself accepts a range.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

.PHONY: install demo test test-fast lint browser
install: $(VENV)/.installed

# Headless Chromium for the report's real-browser tests (skipped without it). Needs root + apt-get.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "no chromium and no root apt-get: the browser tests will be skipped"; fi

demo: $(VENV)/.installed
	$(VENV)/bin/memaudit demo --out reports/demo

# One pytest-xdist worker per usable core (at most 4; tests/conftest.py), each with its share of the torch threads.
test: $(VENV)/.installed browser
	$(PY) -m pytest -q -n auto

# The quick subset while working: every test but the `slow` ones (those that train a model for more than a few
# steps or launch processes).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n auto -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
