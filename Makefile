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

.PHONY: run test test-fast release check-release lint format figures bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c requirements-lock.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python tools/run_notebook.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

release: $(STAMP)
	$(BIN)/python tools/build.py

check-release: $(STAMP)
	$(BIN)/python tools/build.py --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

figures: $(STAMP)
	$(BIN)/python tools/make_figures.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_notebook.py

clean:
	rm -rf build course/release course/submitted course/autograded course/feedback course/gradebook.db
