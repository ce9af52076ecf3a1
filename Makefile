# Two commands on a fresh machine:  make demo  |  make test
# pip byte-compiles what it installs (never --no-compile): where PYTHONDONTWRITEBYTECODE=1 is set (as on this
# project's machines) nothing is compiled later, and every process would compile torch, Lightning, Prefect and
# MLflow from source again (importing the flow took 35 s instead of 14.5 s; CI went from 16 to 30 minutes).
# TORCH_SPEC is installed before the project; a GPU user can override it, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# EXTRAS=dev skips the sentence-embedding model (item texts then use hashed TF-IDF); server, dask and browser
# are what the tracking server, the Dask task runner and the browser test need.
EXTRAS ?= dev,text,server,dask,browser
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m compileall -q flows tasks models data_contracts
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/transferrec demo

# Two workers: the integration tests wait on servers and subprocesses, so one pytest process kept the two cores
# busy only ~1.3 of the time (work stealing balances the long tests between the workers).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

# The fast layer, after every change: unit and contract tests (no servers, no subprocess flows), under 2 minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/contracts -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) mlruns mlartifacts mlflow.db lightning_logs .pytest_cache
