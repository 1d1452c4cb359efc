# hyperdgm: `make run` (install + default job), `make test` (install + test suite), `make ui` (MLflow UI).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Data root: $HYPERDGM_DATA if set, else ../shared/data when present, else ./data.
export HYPERDGM_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
ARGS ?=

.PHONY: install run test ui bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned (==2.13.0) so pip takes the local CPU wheel; never an open range.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m hyperdgm.run $(ARGS)

# One pytest worker per core (pytest-xdist; JOBS=1 for one process), each test file on one worker.
test: install
	$(BIN)/python -m pytest -q -n $(or $(JOBS),auto) --dist loadfile $(ARGS)

# Prints each experiment's runs-table address (MLflow 3 opens its GenAI view otherwise), then serves.
ui: install
	$(BIN)/python -m hyperdgm.ui --uri $(or $(URI),sqlite:///$(abspath runs/mlflow.db)) --port $(or $(PORT),5000)

bench: install
	$(BIN)/python -m hyperdgm.bench $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
