# Two commands on a fresh machine:  make demo  |  make test
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

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile $(TORCH_SPEC)
	$(BIN)/pip install --quiet --no-compile -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/transferrec demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) mlruns mlartifacts mlflow.db lightning_logs .pytest_cache
