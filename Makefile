# The two commands: `make demo` runs the main job end to end, `make test` runs the test suite.
# Both create .venv from the lock file first; nothing installed by hand is assumed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: venv demo test lint parity bench clean

# skewless itself is rebuilt too: its build hook compiles store/_dump.c (hatch_build.py)
$(STAMP): pyproject.toml uv.lock hatch_build.py store/_dump.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install -q "uv==0.13.9"
	$(BIN)/uv sync --frozen --quiet --reinstall-package skewless
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/skewless demo --repo feature_repo

lint: venv
	$(BIN)/ruff check transforms store pipelines serving feature_repo bench cli tests
	$(BIN)/ruff format --check transforms store pipelines serving feature_repo bench cli tests
	$(BIN)/mypy transforms store serving cli pipelines bench
	$(BIN)/mypy --strict transforms store serving
	$(BIN)/mypy tests feature_repo

test: lint
	$(BIN)/python -m pytest

parity: venv
	$(BIN)/skewless parity --rows 100000

# wrk (the serving benchmark's load generator) is installed when missing and apt-get can;
# without it bench.serving falls back to a Python client and says so.
bench: venv
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -q wrk >/dev/null 2>&1; } || echo "wrk not installed: Python load client"
	$(BIN)/skewless bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
