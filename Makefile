# Two commands do everything on a fresh machine:
#   make run    execute the solution notebook end to end and write build/run/report.html
#   make test   run the project's tests (all of them, the slow ones included)
# Each creates .venv and installs the pinned requirements first, if needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# nbgrader runs alembic as a subprocess: keep the environment's bin/ on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ALPACA_DATASET ?= $(CURDIR)/../shared/data/alpaca
export ALPACA_WEIGHTS_DIR ?= $(CURDIR)/../shared/weights
PYTEST_ARGS ?=
# Playwright drives Debian's Chromium; it must never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
# Debian packages the tests need, as package:command. bubblewrap is the grading
# sandbox; chromium runs the browser test (tests/test_browser.py).
SYSTEM_PACKAGES := bubblewrap:bwrap chromium:chromium

.PHONY: run test test-fast release check-release lint format figures bench clean system-packages

# As root (as on CI), install the missing Debian packages; otherwise say what to install.
# Never fails: the tests that need a missing package fail and say so.
system-packages:
	@missing=""; \
	for entry in $(SYSTEM_PACKAGES); do \
		command -v "$${entry#*:}" >/dev/null 2>&1 || missing="$$missing $${entry%%:*}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing the Debian packages the tests need:$$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; } \
			|| echo "Could not install$$missing with apt-get; the tests that need them will fail."; \
	else \
		echo "Missing system packages:$$missing (bubblewrap: the grading sandbox; chromium: the browser test)."; \
		echo "Install them with: sudo apt-get install$$missing"; \
	fi

$(STAMP): requirements.txt requirements-dev.txt requirements-lock.txt requirements-keras2.txt pyproject.toml | system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c requirements-lock.txt
	# Keras 2 beside Keras 3, for the Keras 2 column of the trainable/training claims:
	# without its dependencies, which would add the full tensorflow beside tensorflow-cpu.
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-keras2.txt
	# The grader package, editable: .venv/bin/python, nbgrader and dask workers import
	# this checkout's grader/ from any folder (see pyproject.toml).
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m tools.run_notebook

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

release: $(STAMP)
	$(BIN)/python -m tools.build

check-release: $(STAMP)
	$(BIN)/python -m tools.build --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

figures: $(STAMP)
	$(BIN)/python -m tools.make_figures

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_notebook

clean:
	rm -rf build course/release course/submitted course/autograded course/feedback course/gradebook.db
